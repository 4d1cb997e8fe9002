"""How the command line ends: every expected failure as one line on stderr and an exit
status, never a traceback. 2 for a usage error (an option, a config key or value), 1 for a
runtime error (a file, a checkpoint, the data), 128 + N when signal N stopped the command."""

from __future__ import annotations

import os
import signal
import sys

import click

from . import interrupts
from .errors import CharRNNError, UsageError


def fail(status: int, message: str):
    interrupts.ending()
    click.echo(f"charrnn: error: {' '.join(str(message).split())}", err=True)
    exit_with(status)


def exit_with(status: int):
    interrupts.ending()
    sys.exit(status)


def silence_stdout() -> None:
    """After the reader of a pipe went away, point stdout at /dev/null so exit stays quiet."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return  # not a file descriptor (captured output): nothing can fail at exit
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def release_stdout() -> None:
    """Flush stdout now; if it cannot take the rest (full disk), drop it so exit stays quiet."""
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        silence_stdout()


def interrupted(exc: BaseException) -> tuple[int, str]:
    """The exit status and message for a stop signal. click turns a KeyboardInterrupt into
    click.Abort (the interrupt as its cause), and an end of input (EOFError) too."""
    if isinstance(exc, click.Abort):
        if not isinstance(exc.__cause__, KeyboardInterrupt):
            return 1, "the input ended"
        exc = exc.__cause__
    signum = getattr(exc, "signum", signal.SIGINT)
    return 128 + signum, "interrupted" if signum == signal.SIGINT else "terminated"


class Cli(click.Group):
    """Turns every expected failure into one line and an exit status, never a traceback."""

    def main(self, args=None, prog_name=None, **extra):
        interrupts.begin()
        try:
            status = super().main(args=args, prog_name=prog_name or "charrnn",
                                  standalone_mode=False, **extra)
        except click.UsageError as exc:
            fail(2, f"{exc.format_message()} (see '{self._help_for(exc, args)}')")
        except click.ClickException as exc:
            fail(exc.exit_code, exc.format_message())
        except UsageError as exc:
            fail(2, str(exc))
        except CharRNNError as exc:
            fail(1, str(exc))
        except (click.Abort, KeyboardInterrupt) as exc:
            fail(*interrupted(exc))
        except BrokenPipeError:
            # The reader (e.g. `head`) has all it wanted: that is a normal end, not an error.
            silence_stdout()
            exit_with(0)
        except OSError as exc:
            # Not foreseen by a command: a full disk or a failing device, often on stdout itself.
            release_stdout()
            reason = exc.strerror or exc
            fail(1, f"{exc.filename}: {reason}" if exc.filename else f"cannot write the output: {reason}")
        except UnicodeEncodeError as exc:
            # Text reaches this point only on its way to stdout, whose encoding lacks a character.
            fail(1, f"the output encoding {exc.encoding} cannot show {ascii(exc.object[exc.start])}; "
                     "set PYTHONIOENCODING=utf-8 or use a UTF-8 locale")
        except MemoryError:
            fail(1, "out of memory; use a smaller model (model.hidden_size, model.num_layers), "
                     "fewer parallel rows (train.batch_size, --batch-size, --num-samples) "
                     "or a shorter --length")
        exit_with(status if isinstance(status, int) else 0)

    def _help_for(self, exc: click.UsageError, args) -> str:
        """The help command for a usage error: the subcommand's when one was named."""
        if exc.ctx and " " in exc.ctx.command_path:
            return f"charrnn {exc.ctx.command_path.split(' ', 1)[-1]} --help"
        # Errors found while parsing options carry no context; the command, if any, comes first
        # (the group's own options, --help and --version, end the parsing).
        words = list(sys.argv[1:] if args is None else args)
        return f"charrnn {words[0]} --help" if words and words[0] in self.commands else "charrnn --help"
