"""metrics.jsonl, a run's history: one JSON object per line, each with an "event" ("train",
"eval", "final", "rollback", "diverged"). The one reader and writer of the file: the trainer
appends and, after a rollback or on resume, rewrites it; `charrnn plot` reads it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from .atomic import replace_file
from .errors import CharRNNError

__all__ = ["append", "read", "copy"]


def append(path: Path, record: dict) -> None:
    """Add one record at the end; a refused write is a one-line CharRNNError."""
    append_text(path, json.dumps(record) + "\n")


def append_text(path: Path, text: str) -> None:
    """Add text at the end of a run file (metrics.jsonl, samples.txt)."""
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        raise CharRNNError(f"cannot write {path}: {exc.strerror or exc}; "
                           "the checkpoints saved so far are intact") from None


def read(path: Path) -> list[dict]:
    """The records in order; a line cut short by a crash is skipped."""
    return [record for _, record in _lines(path)]


def copy(source: Path, target: Path, keep: Callable[[dict], bool]) -> None:
    """target gets the records of source (which may be target) that `keep` accepts, in order and
    as they were written, replaced all at once; nothing happens when source does not exist."""
    if not source.exists():
        return
    text = "".join(line + "\n" for line, record in _lines(source) if keep(record))
    replace_file(target, lambda fh: fh.write(text.encode("utf-8")))


def _lines(path: Path):
    """(line, record) for each line of path that parses."""
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            yield line, json.loads(line)
        except ValueError:
            continue  # a line cut short by a crash
