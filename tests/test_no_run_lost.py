"""No run is lost: resume continues exactly (also into another directory, past cut metrics
lines and stale temporaries, with its rollbacks), divergence rolls back and recovers or gives
up with the last good state on disk, and an unwritable directory or a full disk keeps the
previous checkpoint. Signals and SIGKILL: test_signals.py.
"""

import errno
import json
import os
import shutil
import subprocess

import pytest

from charrnn.checkpoint import load_checkpoint, model_from_checkpoint
from charrnn.model import CharRNN

import small_run
from runs import invoke, records
from small_run import assert_error, assert_last_error, listing, save_raw, write_config


@pytest.fixture(scope="module")
def text(repo_root):
    return small_run.small_text(repo_root)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, text):
    return small_run.small_corpus(tmp_path_factory, text)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, corpus):
    return small_run.small_run(tmp_path_factory, corpus)


# -- resume and rollbacks ----------------------------------------------------------------------


def test_resume_skips_cut_metrics_lines_and_clears_stale_temporaries(trained, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for name in ("last.npz", "metrics.jsonl", "config.yaml"):
        (run_dir / name).write_bytes((trained / name).read_bytes())
    with open(run_dir / "metrics.jsonl", "a", encoding="utf-8") as fh:
        fh.write('{"event": "train", "step": 5, "lo')  # a line cut short by SIGKILL
    dead = subprocess.Popen(["true"])
    dead.wait()  # reaped: no process has this id any more
    stale = run_dir / f".last.npz.tmp-{dead.pid}"
    stale.write_bytes(b"PK\x03\x04 half a checkpoint")
    alive = run_dir / f".best.npz.tmp-{os.getppid()}"  # another process's save in flight
    alive.write_bytes(b"PK\x03\x04")
    assert invoke("info", run_dir / "last.npz").exit_code == 0

    result = invoke("train", "--resume", run_dir / "last.npz", "--set", "train.max_steps=6", "--no-progress")
    assert result.exit_code == 0, result.output
    assert [r["step"] for r in records(run_dir, "train")] == [1, 2, 3, 4, 5, 6]
    assert not stale.exists() and alive.exists()


def _contents(directory):
    return {p.name: p.read_bytes() for p in directory.iterdir()}


def test_resume_into_another_directory_keeps_both_runs(trained, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(trained, other)
    before, theirs = _contents(trained), _contents(other)
    result = invoke("train", "--resume", trained / "last.npz", "--out", other, "--no-progress")
    assert_error(result, 2, f"{other} already holds a run", "--overwrite")
    assert _contents(other) == theirs

    fork = tmp_path / "fork"
    result = invoke("train", "--resume", trained / "last.npz", "--out", fork, "--set", "train.max_steps=6",
                    "--no-progress")
    assert result.exit_code == 0, result.output
    assert [r["step"] for r in records(fork, "train")] == [1, 2, 3, 4, 5, 6]  # the history comes along
    assert load_checkpoint(fork / "last.npz")[1]["progress"]["step"] == 6
    assert _contents(trained) == before

    # with no steps left the new directory still holds the run: its checkpoints are copied
    finished = tmp_path / "finished"
    result = invoke("train", "--resume", trained / "last.npz", "--out", finished, "--no-progress")
    assert result.exit_code == 0, result.output
    for name in ("last.npz", "best.npz"):
        assert (finished / name).read_bytes() == (trained / name).read_bytes()
    result = invoke("train", "--resume", finished / "last.npz", "--set", "train.max_steps=5", "--no-progress")
    assert result.exit_code == 0, result.output


def test_resume_keeps_the_rollbacks_its_checkpoint_counts(trained, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    arrays, meta = load_checkpoint(trained / "last.npz")
    save_raw(run_dir / "last.npz", arrays, {**meta, "progress": {**meta["progress"], "rollbacks": 1}})
    history = [{"event": "train", "step": 1}, {"event": "eval", "step": 2},
               {"event": "rollback", "step": 5, "to_step": 2, "rollbacks": 1},  # before the save at 4
               {"event": "train", "step": 3}, {"event": "train", "step": 4},
               {"event": "rollback", "step": 6, "to_step": 4, "rollbacks": 2},  # after it
               {"event": "train", "step": 5}]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history), encoding="utf-8")
    result = invoke("train", "--resume", run_dir / "last.npz", "--set", "train.max_steps=5",
                    "--set", "train.log_every=100", "--no-progress")
    assert result.exit_code == 0, result.output
    assert [(r["event"], r["step"]) for r in records(run_dir)[:5]] == [
        ("train", 1), ("eval", 2), ("rollback", 5), ("train", 3), ("train", 4)]
    assert [r["rollbacks"] for r in records(run_dir, "rollback")] == [1]


@pytest.mark.parametrize("limits, needles", [
    ({"max_steps": 4, "warmup_steps": 4}, ["train.warmup_steps (4)", "the 4 steps", "train.max_steps 4"]),
    ({"max_steps": None, "max_epochs": 1, "warmup_steps": 10**6}, ["train.max_epochs 1", "windows per epoch"]),
])
def test_a_cosine_decay_with_no_steps_after_warm_up_changes_nothing(trained, tmp_path, corpus, limits, needles):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    before = _contents(out)
    config = write_config(tmp_path, corpus, train={"schedule": "cosine", **limits})
    result = invoke("train", "--config", config, "--out", out, "--overwrite", "--no-progress")
    assert_error(result, 2, *needles, "cosine")
    assert _contents(out) == before


# -- divergence ---------------------------------------------------------------------------------


def test_divergence_rolls_back_lowers_the_learning_rate_then_gives_up(tmp_path, corpus):
    config = write_config(tmp_path, corpus, train={
        "learning_rate": 1e4, "grad_clip": 0, "max_rollbacks": 2, "max_steps": 30, "eval_every": 100})
    out = tmp_path / "run"
    result = invoke("train", "--config", config, "--out", out, "--no-progress")
    assert_last_error(result, 1, "training diverged 3 times", "lower train.learning_rate (now 10000)")
    # the first step is taken again after each rollback, each time more gently
    assert [(r["to_step"], r["lr_scale"]) for r in records(out, "rollback")] == [(0, 0.5), (0, 0.25)]
    [diverged] = records(out, "diverged")
    assert records(out)[-1] == diverged and diverged["rollbacks"] == 2
    steps = [r["step"] for r in records(out, "train")]
    assert steps == list(range(1, len(steps) + 1))  # the undone steps' records are gone
    assert records(out, "train")[0]["lr"] == 2.5e3
    assert not (out / "last.npz").exists()


def test_one_rollback_lets_training_recover_and_finish(tmp_path, corpus, monkeypatch):
    real = CharRNN.loss_and_grads
    calls = []

    def one_bad_step(self, *args, **kwargs):
        loss, grads, state = real(self, *args, **kwargs)
        calls.append(loss)
        return (float("nan") if len(calls) == 5 else loss), grads, state
    monkeypatch.setattr(CharRNN, "loss_and_grads", one_bad_step)
    config = write_config(tmp_path, corpus, train={"max_steps": 8, "eval_every": 3})
    out = tmp_path / "run"
    result = invoke("train", "--config", config, "--out", out, "--no-progress")
    assert result.exit_code == 0, result.output
    assert "diverging; rolled back to step 3" in result.stderr
    [rollback] = records(out, "rollback")
    assert (rollback["step"], rollback["to_step"], rollback["lr_scale"]) == (4, 3, 0.5)
    # the undone step 4 is logged once, as retaken, and its loss is not averaged into any record
    assert [r["step"] for r in records(out, "train")] == list(range(1, 9))
    assert [r["loss"] for r in records(out, "train")] == [calls[i] for i in (0, 1, 2, 5, 6, 7, 8, 9)]
    lrs = {r["step"]: r["lr"] for r in records(out, "train")}
    assert lrs[3] == 2e-3 and lrs[4] == lrs[8] == 1e-3
    progress = load_checkpoint(out / "last.npz")[1]["progress"]
    assert (progress["step"], progress["rollbacks"], progress["lr_scale"]) == (8, 1, 0.5)


# -- the run directory and the disk -------------------------------------------------------------


def test_an_unwritable_run_directory_is_reported_before_training(tmp_path, corpus):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory\n", encoding="utf-8")
    result = invoke("train", "--config", write_config(tmp_path, corpus), "--out", blocker / "sub",
                    "--no-progress")
    assert_error(result, 1, f"run directory {blocker / 'sub'}", "--out")
    assert listing(tmp_path) == ["a_file", "config.yaml"]


def test_a_full_disk_while_saving_keeps_the_previous_checkpoint(tmp_path, corpus, monkeypatch):
    out = tmp_path / "run"
    real_replace = os.replace

    def disk_full_on_the_second_save(src, dst, *args, **kwargs):
        if str(dst).endswith("last.npz") and os.path.exists(dst):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_replace(src, dst, *args, **kwargs)
    monkeypatch.setattr(os, "replace", disk_full_on_the_second_save)
    result = invoke("train", "--config", write_config(tmp_path, corpus), "--out", out, "--no-progress")
    monkeypatch.setattr(os, "replace", real_replace)
    assert_last_error(result, 1, out / "last.npz", "No space left on device",
                      "previous checkpoint is intact", f"continue with: charrnn train --resume {out / 'last.npz'}")
    arrays, meta = load_checkpoint(out / "last.npz")
    model_from_checkpoint(arrays, meta, "last.npz")
    assert meta["progress"]["step"] == 2
    assert not list(out.glob(".*.tmp-*"))
