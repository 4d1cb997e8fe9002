"""A run directory's files: preparing it, carrying a resumed run's history into it, and saving
checkpoints with a message that says how to go on when the disk refuses one.

    run_dir/config.yaml  metrics.jsonl  last.npz  best.npz  samples.txt
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

from . import metrics
from .atomic import remove_stale_temporaries, replace_file
from .checkpoint import load_checkpoint, save_checkpoint
from .errors import CharRNNError, UsageError
from .run_state import Progress

RUN_FILES = ("metrics.jsonl", "samples.txt", "last.npz", "best.npz")


def prepare(run_dir: Path, fresh: bool, overwrite: bool) -> None:
    """Make run_dir writable for a run (a fresh one, or one continued in place), removing a
    replaced run's files now: a crash before the first evaluation must not leave the old run's
    checkpoints looking like this one's."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise CharRNNError(f"cannot write to the run directory {run_dir}: "
                           f"{exc.strerror or exc}; choose another with --out") from None
    remove_stale_temporaries(str(run_dir))  # left by a run killed while saving
    if not fresh:
        return
    if not overwrite and (run_dir / "last.npz").exists():
        raise UsageError(f"{run_dir} already holds a run; continue it with --resume "
                         f"{run_dir / 'last.npz'}, write elsewhere with --out, or pass --overwrite")
    for name in RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)


def _saved_step(checkpoint: Path) -> float:
    """The step a checkpoint was saved at; inf when the file cannot tell."""
    try:
        step = load_checkpoint(checkpoint)[1]["progress"]["step"]
    except (CharRNNError, KeyError, TypeError):
        return math.inf
    return step if isinstance(step, int) else math.inf


def continue_history(checkpoint: Path, run_dir: Path, progress: Progress, in_place: bool) -> None:
    """On resume, keep the history up to the checkpoint in run_dir; what was logged after it will
    happen again. A rollback is placed by its count (its step is the one it undid, which a stop
    while retaking steps can precede), everything else by its step. Resumed elsewhere, run_dir
    also gets the checkpoint as last.npz and, when it is not from a later step, best.npz."""
    def before(record: dict) -> bool:
        if record.get("event") == "rollback":
            return record.get("rollbacks", 0) <= progress.rollbacks
        return record.get("step", 0) <= progress.step

    metrics.copy(checkpoint.parent / "metrics.jsonl", run_dir / "metrics.jsonl", before)
    if in_place:
        return
    copies = [(checkpoint, run_dir / "last.npz")]
    best = checkpoint.parent / "best.npz"
    if best.exists() and _saved_step(best) <= progress.step:
        copies.append((best, run_dir / "best.npz"))
    for source, target in copies:
        with open(source, "rb") as original:
            replace_file(target, lambda fh: shutil.copyfileobj(original, fh))


def save(path: Path, capture: tuple[dict, dict]) -> None:
    """save_checkpoint, plus the way forward in the message when the disk refuses the file."""
    try:
        save_checkpoint(str(path), *capture)
    except CharRNNError as exc:
        last = path.parent / "last.npz"
        then = f"; once fixed, continue with: charrnn train --resume {last}" if last.exists() else ""
        raise CharRNNError(f"{exc}{then}") from None
