"""SIGINT and SIGTERM: one rule for the whole process, so no signal can end it by surprise.

- Outside a training loop the first stop signal raises Interrupted, and the command unwinds
  and ends in one line with status 128 + N.
- Inside a training loop (`stop_signals()`) the first one only asks the loop to save and stop
  after the current step; a second one, even mid-save, raises Interrupted at once (the previous
  checkpoint is safe: every checkpoint is written atomically), or, while a temporary file is
  being written (`held()`), as soon as it is closed, before it would replace the previous one.
- At most one Interrupted is ever raised, and no signal is acted on once the process has begun
  to end (`ending()`): a signal during the stop message, the unwinding or the exit is recorded
  for the exit status and otherwise ignored. Without this, a signal that arrived after Python's
  default handler was back, or while an earlier interrupt was being reported, killed the process
  (status -2, a traceback) instead of letting it end as it had begun to.

`install()` puts the rule in place for the life of a process (the command line does this, and
brackets each command with `begin()` and `ending()`); a library caller who never installs it
keeps its own handlers outside the training loop.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """Stop at once: signal `signum` asked for it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class _State:
    def __init__(self):
        self.in_loop = False          # a training loop is running and takes the first signal
        self.requested: int | None = None  # the signal that asked the loop to stop
        self.raised = False           # Interrupted has been raised: the process is unwinding
        self.ending = False           # the command has begun to end
        self.late: int | None = None  # the last signal that came too late to act on
        self.holding = 0              # inside held(): Interrupted waits for the block's end
        self.held: int | None = None  # the signal whose Interrupted waits


_state = _State()


def _handle(signum, frame) -> None:
    if _state.raised or _state.ending:
        _state.late = signum
        return
    if _state.in_loop and _state.requested is None:
        _state.requested = signum
        return
    if _state.holding:
        _state.held = signum
        return
    _state.raised = True
    raise Interrupted(signum)


@contextmanager
def held():
    """Within: an Interrupted a signal would raise waits until the block has ended, then is
    raised. For writing a file: zipfile (np.savez) interrupted between two of its own lines can
    fail to close and raise ValueError instead, so a second Ctrl-C during a save would end in a
    traceback. The block is the few milliseconds of writing a temporary file."""
    _state.holding += 1
    try:
        yield
    finally:
        _state.holding -= 1
        signum, _state.held = _state.held, None
        if signum is not None and not _state.holding and not (_state.raised or _state.ending):
            _state.raised = True
            raise Interrupted(signum)


def install() -> None:
    """Take SIGINT and SIGTERM by the rule above until the process exits."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, _handle)


def begin() -> None:
    """A command starts: nothing of an earlier one (in the same process) counts."""
    _state.__init__()


def ending() -> None:
    """The command has begun to end: from now on a stop signal is only recorded."""
    _state.ending = True


def final_status(status):
    """Ignore the stop signals for the rest of the process and return its exit status: `status`,
    or for a command stopped by a signal (128 + N) 128 + the last signal that came while it was
    ending, so SIGTERM after Ctrl-C ends with 143 wherever it lands. Ignored (SIG_IGN, for every
    thread), because Python's finalization puts back the default handlers, and a signal then
    would kill the process; SIG_IGN is the one disposition it leaves alone."""
    _state.ending = True
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    late = _state.late
    if isinstance(status, int) and status >= 128 and late is not None:
        return 128 + late
    return status


class _LoopSignals:
    """What a training loop reads: `received`, the signal that asked it to stop (or None)."""

    @property
    def received(self) -> int | None:
        return _state.requested


class _NoSignals:
    """For a loop outside the main thread, which never receives signals."""

    received = None


@contextmanager
def stop_signals():
    """Within: the first SIGINT/SIGTERM sets `.received` of the yielded object and the loop
    stops when it looks; a second raises Interrupted. After a stop signal, the process is
    ending: later signals are only recorded."""
    if threading.current_thread() is not threading.main_thread():  # only it receives signals
        yield _NoSignals()
        return
    _state.__init__()  # a library caller may train again in the same process
    _state.in_loop = True  # before the handler: a signal from here on finds the loop's rule
    previous = {}
    try:
        for sig in STOP_SIGNALS:
            previous[sig] = signal.signal(sig, _handle)
        yield _LoopSignals()
    finally:
        if _state.requested is not None or _state.raised:
            _state.ending = True
        for sig, handler in previous.items():
            # None: a handler installed from C, which Python cannot put back; the default then
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        _state.in_loop = False
