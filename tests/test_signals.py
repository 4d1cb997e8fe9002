"""Signals and hard stops: Ctrl-C, SIGTERM and SIGKILL at any moment never lose a run.

The first SIGINT/SIGTERM saves and stops after the step (status 128 + N); a second stops at
once; no later signal can turn the ending into a traceback or death by signal. Where a test
depends on when a signal lands, it either places the signal at an exact point of the code (a
child process with a hook) or asserts what must hold wherever it lands.
"""

import functools
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from charrnn.checkpoint import load_checkpoint, model_from_checkpoint

import runs
from runs import invoke, records

BASE_CONFIG = {
    "name": "t",
    "data": {"val_fraction": 0.05},
    "model": {"cell": "lstm", "hidden_size": 8, "num_layers": 1},
    "train": {"batch_size": 4, "seq_len": 16, "max_steps": 4, "eval_every": 2, "log_every": 1,
              "sample_length": 0, "seed": 1},
}
write_config = functools.partial(runs.write_config, base=BASE_CONFIG)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, repo_root):
    path = tmp_path_factory.mktemp("data") / "corpus.txt"
    shakespeare = (repo_root / "corpora" / "tinyshakespeare.txt").read_text(encoding="utf-8")
    path.write_text(shakespeare[:20_000], encoding="utf-8")
    return path


def _child_env():
    return {**os.environ, "OPENBLAS_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _start_training(args, stderr_path):
    with open(stderr_path, "wb") as err:
        return subprocess.Popen([sys.executable, "-m", "charrnn", *map(str, args), "--no-progress"],
                                stdout=subprocess.DEVNULL, stderr=err, env=_child_env())


def _wait_for(condition, proc, what, timeout=90):
    """Poll until condition() holds; fail if the process ends first or the (generous) time runs out."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"training ended (status {proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.02)


def _lines(path):
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []


def _assert_checkpoint_loads(path):
    arrays, meta = load_checkpoint(path)
    model_from_checkpoint(arrays, meta, str(path))
    return meta["progress"]["step"]


def assert_last_error(result, status, *needles):
    """Exit `status`, no traceback, and the last stderr line the only error, with every needle."""
    assert result.exit_code == status, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("charrnn: error: ")]
    assert len(errors) == 1 and result.stderr.splitlines()[-1] == errors[0], result.stderr
    for needle in needles:
        assert str(needle) in errors[0], (needle, errors[0])


def test_sigterm_saves_a_checkpoint_exits_143_and_resumes(tmp_path, corpus, assert_resumes):
    config = write_config(tmp_path, corpus, train={"max_steps": 10**6, "eval_every": 10**6})
    out, err_path = tmp_path / "run", tmp_path / "stderr.txt"
    proc = _start_training(["train", "--config", config, "--out", out], err_path)
    _wait_for(lambda: len(_lines(out / "metrics.jsonl")) >= 3, proc, "three logged steps")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=90) == 143
    err = err_path.read_text(encoding="utf-8")
    assert "stopped by SIGTERM" in err and f"charrnn train --resume {out / 'last.npz'}" in err
    assert "Traceback" not in err and "error" not in err
    assert_resumes(out)


@pytest.mark.parametrize("gap", [0.0, 0.005, 0.05])
def test_a_second_sigint_wherever_it_lands_ends_130_and_the_previous_checkpoint_loads(
        tmp_path, corpus, gap):
    """Two Ctrl-Cs `gap` seconds apart: the second may land in a step, a save, the stop message
    or the exit. Whichever, the status is 130, the last stderr line one of the two endings, and
    last.npz loads and resumes."""
    config = write_config(tmp_path, corpus, train={"max_steps": 10**6, "eval_every": 2})
    out, err_path = tmp_path / "run", tmp_path / "stderr.txt"
    proc = _start_training(["train", "--config", config, "--out", out], err_path)
    _wait_for(lambda: len(_lines(out / "metrics.jsonl")) >= 8, proc, "a few checkpoints")
    proc.send_signal(signal.SIGINT)
    time.sleep(gap)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=90) == 130, err_path.read_text(encoding="utf-8")
    err = err_path.read_text(encoding="utf-8")
    assert "Traceback" not in err
    last_line = err.splitlines()[-1]
    assert last_line == "charrnn: error: interrupted" or last_line.startswith("stopped by SIGINT"), err
    step = _assert_checkpoint_loads(out / "last.npz")
    result = invoke("train", "--resume", out / "last.npz", "--set", f"train.max_steps={step + 2}",
                    "--no-progress")
    assert result.exit_code == 0, result.output
    assert not list(out.glob(".*.tmp-*"))


# A child process running the real entry point, charrnn.cli.main(), with the first signal raised
# right after the first checkpoint and the second at one exact moment of the ending.
_CHILD = textwrap.dedent("""
    import signal, sys
    from charrnn import cli, interrupts, run_dir
    first, second, moment = signal.Signals[sys.argv[1]], signal.Signals[sys.argv[2]], sys.argv[3]
    saves = []
    real_save, real_echo, real_final = run_dir.save, cli.click.echo, interrupts.final_status

    def save(path, state):
        if len(saves) == 2 and moment in ("save", "report"):  # the stop's save, before it writes
            signal.raise_signal(second)
        real_save(path, state)
        saves.append(path)
        if len(saves) == 2:  # last.npz and best.npz of the first evaluation are on disk
            signal.raise_signal(first)

    def echo(message=None, *args, **kwargs):
        if moment == "message" and str(message).startswith("stopped by"):
            signal.raise_signal(second)
        if moment == "report" and str(message).startswith("charrnn: error"):
            signal.raise_signal(signal.SIGTERM)  # a third, while the second is being reported
        real_echo(message, *args, **kwargs)

    def final_status(status):
        if moment == "exit":
            signal.raise_signal(second)
        return real_final(status)

    class SignalWhenDestroyed:  # a module global: destroyed after Python restored SIG_DFL
        def __del__(self):
            signal.raise_signal(second)

    if moment == "finalization":
        bomb = SignalWhenDestroyed()

    run_dir.save, cli.click.echo, interrupts.final_status = save, echo, final_status
    sys.argv = ["charrnn", *sys.argv[4:]]
    cli.main()
""")


@pytest.mark.parametrize("moment", ["save", "message", "report", "exit", "finalization"])
@pytest.mark.parametrize("second", ["SIGINT", "SIGTERM"])
def test_a_second_signal_at_each_moment_of_the_ending_gives_its_status_and_no_traceback(
        tmp_path, corpus, moment, second):
    config = write_config(tmp_path, corpus, train={"max_steps": 10**6, "eval_every": 2})
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-c", _CHILD, "SIGINT", second, moment, "train",
                           "--config", str(config), "--out", str(out), "--no-progress"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          env=_child_env(), timeout=120)
    # the report of the second signal gets a third (SIGTERM), which then has the last word
    # once the status is decided (finalization) a signal changes nothing
    expected = {"report": 143, "finalization": 130}.get(moment, 128 + signal.Signals[second])
    assert done.returncode == expected, done.stderr
    assert "Traceback" not in done.stderr
    last_line = done.stderr.splitlines()[-1]
    if moment in ("save", "report"):  # stopped at once, in the stop's save
        ended = "interrupted" if second == "SIGINT" else "terminated"  # the signal that stopped it
        assert last_line == f"charrnn: error: {ended}", done.stderr
    else:  # the stop had saved and was reporting or exiting
        assert last_line.startswith("stopped by SIGINT at step 2"), done.stderr
        assert "error" not in done.stderr
    assert _assert_checkpoint_loads(out / "last.npz") == 2
    assert not list(out.glob(".*.tmp-*"))


def test_a_second_sigint_during_a_save_leaves_the_previous_checkpoint(tmp_path, corpus, monkeypatch):
    """In-process: both interrupts arrive while last.npz is being replaced."""
    out = tmp_path / "run"
    config = write_config(tmp_path, corpus, train={"max_steps": 20, "eval_every": 2})
    real_fsync = os.fsync

    def interrupted_fsync(fd):
        if ".last.npz.tmp-" in os.readlink(f"/proc/self/fd/{fd}") and (out / "last.npz").exists():
            signal.raise_signal(signal.SIGINT)  # the first: finish the step and save...
            signal.raise_signal(signal.SIGINT)  # ...the second, mid-save: stop at once
        real_fsync(fd)
    monkeypatch.setattr(os, "fsync", interrupted_fsync)
    result = invoke("train", "--config", config, "--out", out, "--no-progress")
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert_last_error(result, 130, "interrupted")
    assert _assert_checkpoint_loads(out / "last.npz") == 2
    assert not list(out.glob(".*.tmp-*"))


def test_sigkill_at_twenty_random_moments_never_loses_the_run(tmp_path, corpus):
    config = write_config(tmp_path, corpus, train={"max_steps": 10**6, "eval_every": 2})
    out = tmp_path / "run"
    last = out / "last.npz"
    delays = [random.Random(20240611).uniform(0.0, 0.3) for _ in range(20)]
    args = ["train", "--config", config, "--out", out]
    steps = []
    for round_, delay in enumerate(delays):
        err_path = tmp_path / f"stderr-{round_}.txt"
        proc = _start_training(args, err_path)
        try:
            # the summary line comes right before the loop; the fresh run also needs a checkpoint
            _wait_for(lambda: b"\n" in err_path.read_bytes(), proc, "the start of training")
            if not steps:
                _wait_for(last.exists, proc, "the first checkpoint")
            time.sleep(delay)
            assert proc.poll() is None, err_path.read_text(encoding="utf-8")
        finally:
            proc.kill()
            proc.wait(timeout=90)
        steps.append(_assert_checkpoint_loads(last))
        args = ["train", "--resume", last]
    assert steps == sorted(steps) and steps[-1] > steps[0], steps

    final = steps[-1] + 2
    result = invoke("train", "--resume", last, "--set", f"train.max_steps={final}", "--no-progress")
    assert result.exit_code == 0, result.output
    assert load_checkpoint(last)[1]["progress"]["step"] == final
    # every step logged exactly once: lines cut by a kill and events past the checkpoint are gone
    assert [r["step"] for r in records(out, "train")] == list(range(1, final + 1))
    assert not list(out.glob(".*.tmp-*"))


def test_a_stop_signal_during_a_file_write_waits_until_the_file_is_whole(tmp_path):
    """np.savez interrupted between two of zipfile's lines can fail to close and raise ValueError
    instead of the interrupt (a traceback for a second Ctrl-C mid-save): the atomic writer holds
    the interrupt until its temporary file is written and closed, then raises it before the
    rename, so the previous file stays and the temporary is removed."""
    from charrnn import interrupts
    from charrnn.atomic import replace_file

    target = tmp_path / "file"
    target.write_bytes(b"previous")
    finished = []

    def write(fh):
        fh.write(b"first half, ")
        signal.raise_signal(signal.SIGINT)  # the second: it would raise Interrupted here
        fh.write(b"second half")
        finished.append(True)

    with pytest.raises(interrupts.Interrupted):
        with interrupts.stop_signals():
            signal.raise_signal(signal.SIGINT)  # the first: the loop is asked to stop
            replace_file(target, write)
    assert finished  # the write ran to its end before the interrupt was raised
    assert target.read_bytes() == b"previous"
    assert not list(tmp_path.glob(".*tmp-*"))
