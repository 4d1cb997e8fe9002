"""The two kinds of error the command line turns into a one-line message.

UsageError: the user asked for something invalid (an option, a config key or value) -> exit 2.
CharRNNError: a valid request that failed on its inputs (a file, a checkpoint, the data) -> exit 1.
"""


class CharRNNError(Exception):
    """A runtime failure with a message fit to show the user as is."""


class UsageError(CharRNNError):
    """An invalid option, config key or value."""
