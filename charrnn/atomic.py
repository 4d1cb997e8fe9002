"""Replacing a file all at once: how every file of a run (checkpoints, config.yaml, a rewritten
metrics.jsonl, copies on resume) is written, so that a crash or a full disk leaves the old file or
the new one, never half of one.

The new content goes to ".NAME.tmp-PID" beside the file, is flushed to disk and renamed over it;
the directory is then flushed so the rename survives a power cut. The process id in the name
says whose write it was: a later run deletes the temporaries of processes that are gone.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable
from typing import BinaryIO

from .errors import CharRNNError
from .interrupts import held

__all__ = ["replace_file", "remove_stale_temporaries"]

TEMPORARY = ".tmp-"


def replace_file(path: str | os.PathLike, write: Callable[[BinaryIO], object], *,
                 previous: str = "file") -> None:
    """Replace path by what write(fh) puts into a binary file.

    Raises CharRNNError "cannot write PATH: reason" if the disk refuses (adding that the previous
    `previous`, e.g. "checkpoint", is intact when there was one); any other exception from write
    propagates. Either way the temporary file is gone and the file at path is untouched.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    temporary = os.path.join(directory, f".{os.path.basename(path)}{TEMPORARY}{os.getpid()}")
    existed = os.path.exists(path)
    try:
        # A stop signal waits until the temporary file is written and closed (zipfile cannot be
        # interrupted safely), then stops the write before the rename: the previous file stays.
        with held(), open(temporary, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temporary, path)
    except BaseException as exc:
        _remove_quietly(temporary)
        if isinstance(exc, OSError):
            intact = f"; the previous {previous} is intact" if existed else ""
            raise CharRNNError(f"cannot write {path}: {exc.strerror or exc}{intact}") from exc
        raise
    _fsync_directory(directory)


def remove_stale_temporaries(directory: str) -> list[str]:
    """Delete the temporary files of writes that never finished in `directory`; returns their paths.

    A process killed while writing (SIGKILL, power cut) leaves its ".NAME.tmp-PID" behind. Such a
    file is never read, so it is only litter; files of processes still running are left alone.
    """
    removed = []
    for temporary in glob.glob(os.path.join(glob.escape(os.fspath(directory)), f".*{TEMPORARY}*")):
        pid = temporary.rpartition(TEMPORARY)[2]
        if pid.isdigit() and not _process_alive(int(pid)):
            _remove_quietly(temporary)
            removed.append(temporary)
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid() or os.name != "posix":
        return True  # elsewhere os.kill(pid, 0) would end the process instead of asking about it
    try:
        os.kill(pid, 0)  # signal 0 only asks whether the process exists
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists but belongs to someone else, or the question is not allowed
    return True


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass  # never created, or already gone: nothing left behind either way


def _fsync_directory(directory: str) -> None:
    """Make the rename durable; best effort, as some filesystems cannot fsync a directory."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # the new file is already in place; only durability across a power cut is weaker
    finally:
        os.close(fd)
