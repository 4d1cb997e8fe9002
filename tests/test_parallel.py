"""train.processes: a window's rows split between worker processes give the unsplit step.

The split is checked in float64 against CharRNN.loss_and_grads on the same rows, state and
dropout masks; then through the command line: a split run resumes bit for bit, a lost worker
leaves the run going in one process, and Ctrl-C at the terminal (SIGINT to the whole process
group, workers included) still saves a checkpoint that resumes.
"""

import functools
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from charrnn.checkpoint import load_checkpoint
from charrnn.cli import cli
from charrnn.model import CharRNN, ModelSpec
from charrnn.parallel import SplitBatch

import runs
from runs import invoke, records


def small_model(cell="lstm", dropout=0.0, dtype=np.float64, vocab=11):
    model = CharRNN(ModelSpec(vocab, 6, 2, cell=cell, dropout=dropout, dtype=dtype))
    model.init_params(np.random.default_rng(0))
    return model


def window(model, batch, steps, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, model.vocab_size, size=(batch, steps))
    y = rng.integers(0, model.vocab_size, size=(batch, steps))
    state = [tuple(rng.standard_normal(s.shape).astype(model.dtype) for s in layer)
             for layer in model.init_state(batch)]
    return x, y, state


@pytest.mark.parametrize("cell, batch, processes, dropout", [
    ("lstm", 6, 2, 0.0),
    ("gru", 5, 2, 0.3),   # rows that do not divide evenly, and dropout masks cut with them
    ("rnn", 7, 3, 0.2),
])
def test_split_rows_give_the_unsplit_loss_gradients_and_state(cell, batch, processes, dropout):
    model = small_model(cell, dropout)
    x, y, state = window(model, batch, 4)
    expected = model.loss_and_grads(x, y, state, np.random.default_rng(7))
    with SplitBatch(model, processes) as split:
        rng = np.random.default_rng(7)
        loss, grads, new_state = split.loss_and_grads(x, y, state, rng)
        assert loss == pytest.approx(expected[0], rel=1e-12)
        assert grads.keys() == expected[1].keys()
        for key, g in grads.items():
            np.testing.assert_allclose(g, expected[1][key], rtol=1e-10, atol=1e-13, err_msg=key)
        for ours, theirs in zip(new_state, expected[2]):
            for a, b in zip(ours, theirs):
                np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_consecutive_windows_draw_the_same_masks_as_the_unsplit_model():
    model = small_model(dropout=0.5)
    x, y, state = window(model, 6, 3)
    alone, shared = np.random.default_rng(3), np.random.default_rng(3)
    expected = [model.loss_and_grads(x, y, state, alone)[1]["layers.1.Wx"].copy() for _ in range(2)]
    with SplitBatch(model, 3) as split:
        got = [split.loss_and_grads(x, y, state, shared)[1]["layers.1.Wx"].copy() for _ in range(2)]
    assert not np.allclose(expected[0], expected[1])  # the second window has other masks
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-13)


def test_workers_see_parameter_updates_and_close_frees_the_shared_memory():
    model = small_model()
    x, y, state = window(model, 4, 3)
    with SplitBatch(model, 2) as split:
        split.loss_and_grads(x, y, state)  # the workers are up and have read the parameters
        model.params["head.W"][...] *= 2.0  # in place, as the optimizer writes
        loss, grads, _ = split.loss_and_grads(x, y, state)
        grads = {k: g.copy() for k, g in grads.items()}
        names = [block.name for block in split._blocks]
        processes = [process for process, _, _ in split._workers]
    assert all(os.path.exists(f"/dev/shm/{name}") is False for name in names)
    assert not any(process.is_alive() for process in processes)
    expected_loss, expected, _ = model.loss_and_grads(x, y, state)  # private arrays again
    assert loss == pytest.approx(expected_loss, rel=1e-12)
    np.testing.assert_allclose(grads["head.W"], expected["head.W"], rtol=1e-10)


def test_a_view_kept_past_close_stays_readable():
    model = small_model()
    with SplitBatch(model, 2):
        kept = model.params["head.W"]
        values = kept.copy()
    np.testing.assert_array_equal(kept, values)  # mapped still: no crash, same numbers
    assert model.params["head.W"] is not kept


def test_a_lost_worker_leaves_the_step_to_this_process():
    model = small_model()
    x, y, state = window(model, 4, 3)
    expected_loss, expected, _ = model.loss_and_grads(x, y, state)
    heard = []
    with SplitBatch(model, 2, notify=heard.append) as split:
        processes = [process for process, _, _ in split._workers]
        processes[1].kill()
        processes[1].join()
        for _ in range(2):  # the failing step and the next, both in this process
            loss, grads, _ = split.loss_and_grads(x, y, state)
            assert loss == pytest.approx(expected_loss, rel=1e-12)
            np.testing.assert_allclose(grads["layers.0.Wh"], expected["layers.0.Wh"], rtol=1e-12)
        assert split._workers == [] and not any(process.is_alive() for process in processes)
    assert len(heard) == 1 and "worker process was lost" in heard[0] and "one process" in heard[0]


def test_a_worker_that_stops_answering_is_replaced_by_this_process(monkeypatch):
    monkeypatch.setattr("charrnn.parallel._LATE_FLOOR_S", 0.5)
    model = small_model()
    x, y, state = window(model, 4, 3)
    expected_loss, _, _ = model.loss_and_grads(x, y, state)
    heard = []
    with SplitBatch(model, 2, notify=heard.append) as split:
        silent = split._workers[1][0]
        os.kill(silent.pid, signal.SIGSTOP)  # alive, holding its pipe open, never replying
        started = time.monotonic()
        loss, _, _ = split.loss_and_grads(x, y, state)
        # Only a guard against a hang: the deadline scales with the other worker's reply time,
        # which on busy cores can be seconds, so no tighter bound holds by design.
        assert time.monotonic() - started < 120
        assert loss == pytest.approx(expected_loss, rel=1e-12)
        assert split._workers == [] and not silent.is_alive()
    assert len(heard) == 1 and "stopped answering" in heard[0] and "one process" in heard[0]


def test_an_error_in_a_worker_is_reported_and_raised_by_the_step_in_this_process():
    model = small_model()
    x, y, _ = window(model, 4, 3)
    bad_state = [tuple(np.zeros((4, 5)) for _ in layer) for layer in model.init_state(4)]  # H is 6
    heard = []
    with SplitBatch(model, 2, notify=heard.append) as split:
        with pytest.raises(ValueError):
            split.loss_and_grads(x, y, bad_state)
    assert len(heard) == 1 and "worker process failed (ValueError" in heard[0]


def test_fewer_than_two_processes_is_refused():
    with pytest.raises(ValueError, match="at least 2"):
        SplitBatch(small_model(), 1)


# -- through the command line ----------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, repo_root):
    path = tmp_path_factory.mktemp("data") / "corpus.txt"
    path.write_text((repo_root / "corpora" / "tinyshakespeare.txt").read_text(encoding="utf-8")[:20_000],
                    encoding="utf-8")
    return path


BASE_CONFIG = {
    "name": "t",
    "data": {"val_fraction": 0.05},
    "model": {"cell": "lstm", "hidden_size": 12, "num_layers": 2, "dropout": 0.1},
    "train": {"batch_size": 6, "seq_len": 16, "max_steps": 10, "eval_every": 5, "log_every": 1,
              "sample_length": 0, "seed": 1, "dtype": "float64", "processes": 2},
}
write_config = functools.partial(runs.write_config, base=BASE_CONFIG)


def losses(run_dir):
    return [r["loss"] for r in records(run_dir, "train")]


def test_a_split_run_matches_one_process_and_resumes_exactly(tmp_path, corpus):
    one = tmp_path / "one"
    assert invoke("train", "--config", write_config(tmp_path, corpus, train={"processes": 1}), "--out", one,
                  "--no-progress").exit_code == 0
    full = tmp_path / "full"
    result = invoke("train", "--config", write_config(tmp_path, corpus), "--out", full, "--no-progress")
    assert result.exit_code == 0, result.output
    assert "rows split between 2 processes" in result.output and "one process" not in result.output
    half = tmp_path / "half"
    assert invoke("train", "--config", write_config(tmp_path, corpus, train={"max_steps": 5}), "--out", half,
                  "--no-progress").exit_code == 0
    resumed = invoke("train", "--resume", half / "last.npz", "--set", "train.max_steps=10", "--no-progress")
    assert resumed.exit_code == 0, resumed.output
    assert "rows split between 2 processes" in resumed.output
    assert "one process" not in resumed.output  # no worker was lost on the way

    np.testing.assert_allclose(losses(full), losses(one), rtol=1e-9)
    assert losses(half) == losses(full)
    a, _ = load_checkpoint(full / "last.npz")
    b, _ = load_checkpoint(half / "last.npz")
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_more_processes_than_rows_is_a_one_line_config_error(tmp_path, corpus):
    result = CliRunner().invoke(cli, ["train", "--config", str(write_config(tmp_path, corpus, train={"processes": 8})),
                                      "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "train.processes (8) must not exceed train.batch_size (6)" in result.output
    assert not (tmp_path / "o").exists()


def _shared_blocks(pid: int) -> set[str]:
    """The shared-memory segments process pid has mapped (names in /dev/shm)."""
    with open(f"/proc/{pid}/maps", encoding="utf-8") as fh:
        return {line.split("/dev/shm/", 1)[1].split()[0] for line in fh if "/dev/shm/psm_" in line}


def test_ctrl_c_to_the_process_group_saves_and_resumes(tmp_path, corpus, assert_resumes):
    config = write_config(tmp_path, corpus, train={"max_steps": 100_000, "eval_every": 100_000,
                                                   "dtype": "float32"})
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "charrnn", "train", "--config", str(config),
                             "--out", str(out), "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own group, as a terminal's job is
    deadline = time.time() + 60
    metrics = out / "metrics.jsonl"

    def logged():
        return len(metrics.read_text().splitlines()) if metrics.exists() else 0

    while time.time() < deadline and logged() < 3:
        time.sleep(0.05)
    assert logged() >= 3, "training logged nothing within 60 s"
    blocks = _shared_blocks(proc.pid)  # this run's own: other processes may share memory too
    assert blocks                       # parameters, gradients, ... shared with the workers
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: main process and workers alike
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "--resume" in err and "Traceback" not in err and "worker" not in err
    assert not blocks & set(os.listdir("/dev/shm"))  # the shared blocks went with the run
    assert_resumes(out)


def test_no_room_for_shared_memory_is_one_line_and_writes_nothing(tmp_path, corpus, monkeypatch):
    class Full:
        free = 0

    monkeypatch.setattr("charrnn.parallel._SHM_DIR", str(tmp_path))  # a directory on any system
    monkeypatch.setattr("charrnn.parallel.shutil.disk_usage", lambda path: Full)
    out = tmp_path / "o"
    result = CliRunner().invoke(cli, ["train", "--config", str(write_config(tmp_path, corpus)),
                                      "--out", str(out)])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("charrnn: error: train.processes 2: cannot start")
    assert f"{tmp_path} has 0 MiB free" in lines[0] and "--set train.processes=1" in lines[0]
    assert not out.exists()
