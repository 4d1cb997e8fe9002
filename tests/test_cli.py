"""The command line end to end: train, resume, sample, eval, info, gradcheck, signals."""

import functools
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from charrnn.checkpoint import load_checkpoint, load_model
from charrnn.cli import cli

import runs
from runs import invoke, records


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, repo_root):
    path = tmp_path_factory.mktemp("data") / "shakespeare-30k.txt"
    text = (repo_root / "corpora" / "tinyshakespeare.txt").read_text(encoding="utf-8")[:30_000]
    path.write_text(text, encoding="utf-8")
    return path


BASE_CONFIG = {
    "name": "t",
    "data": {"val_fraction": 0.1},
    "model": {"cell": "lstm", "hidden_size": 16, "num_layers": 1},
    "train": {"batch_size": 4, "seq_len": 16, "max_steps": 12, "eval_every": 6, "log_every": 1,
              "sample_length": 20, "seed": 3},
}
write_config = functools.partial(runs.write_config, base=BASE_CONFIG)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, corpus):
    directory = tmp_path_factory.mktemp("run")
    config = write_config(directory, corpus)
    result = invoke("train", "--config", config, "--out", directory / "out", "--no-progress")
    assert result.exit_code == 0, result.output
    return directory / "out"


def test_train_writes_the_run_directory(trained):
    for name in ("config.yaml", "metrics.jsonl", "last.npz", "best.npz", "samples.txt"):
        assert (trained / name).is_file(), name
    assert [r["step"] for r in records(trained, "train")] == list(range(1, 13))
    assert [r["step"] for r in records(trained, "eval")] == [6, 12]
    record = records(trained, "train")[0]
    assert {"loss", "bpc", "grad_norm", "lr", "chars_per_s", "elapsed", "epoch"} <= set(record)
    _, meta = load_checkpoint(trained / "last.npz")
    assert meta["progress"]["step"] == 12
    assert "=== step 6" in (trained / "samples.txt").read_text(encoding="utf-8")


def test_train_reports_parameters_and_memory(tmp_path, corpus):
    result = invoke("train", "--config", write_config(tmp_path, corpus, train={"max_steps": 2}),
                 "--out", tmp_path / "o", "--no-progress")
    assert result.exit_code == 0
    assert re.search(r"[\d,]+ parameters, ~\d+ MiB", result.output)


def test_sample_same_seed_same_text_and_different_seed_differs(trained):
    a = invoke("sample", trained / "last.npz", "--seed", 1, "--length", 200)
    b = invoke("sample", trained / "last.npz", "--seed", 1, "--length", 200)
    c = invoke("sample", trained / "last.npz", "--seed", 2, "--length", 200)
    assert a.exit_code == 0 and a.output == b.output and a.output != c.output
    assert len(a.output) == 201  # 200 characters and the final newline


def test_temperature_zero_is_the_greedy_continuation(trained):
    result = invoke("sample", trained / "last.npz", "-t", 0, "--prime", "The ", "--length", 30, "--seed", 5)
    model, vocab, _, _ = load_model(trained / "last.npz")
    state = model.init_state(1)
    for ch in "The ":
        logits, state = model.step(np.array([vocab.index[ch]]), state)
    out = []
    for _ in range(30):
        nxt = int(np.argmax(logits[0]))
        out.append(vocab.chars[nxt])
        logits, state = model.step(np.array([nxt]), state)
    assert result.output == "The " + "".join(out) + "\n"


def test_num_samples_gives_distinct_samples_in_one_pass(trained):
    result = invoke("sample", trained / "last.npz", "--num-samples", 8, "--length", 40, "--seed", 0)
    assert result.exit_code == 0
    samples = re.split(r"--- sample \d+ ---\n", result.output)[1:]
    assert len(samples) == 8
    assert len(set(samples)) == 8


def test_eval_on_the_val_split_gives_the_logged_loss(trained):
    result = invoke("eval", trained / "best.npz", "--val")
    assert result.exit_code == 0, result.output
    printed = float(re.search(r"loss ([\d.]+) nats", result.output).group(1))
    logged = min(r["val_loss"] for r in records(trained, "eval"))
    assert abs(printed - logged) < 2e-6


def test_eval_counts_and_excludes_characters_outside_the_vocabulary(trained, tmp_path):
    text = tmp_path / "other.txt"
    text.write_text("To be, or not to be: that is the question. ÆØÅ ÆØ", encoding="utf-8")
    result = invoke("eval", trained / "last.npz", text)
    assert result.exit_code == 0
    assert "5 outside the vocabulary excluded" in result.output
    assert re.search(r"perplexity [\d.]+", result.output)


def test_info_describes_the_checkpoint(trained):
    result = invoke("info", trained / "last.npz")
    assert result.exit_code == 0
    for expected in ("lstm, 1 layer(s) x 16 units", "parameters", "step 12, epoch", "best val",
                     "learning_rate"):
        assert expected in result.output


def test_gradcheck_of_the_adaptive_head():
    result = invoke("gradcheck", "--adaptive", "--vocab", 9, "--steps", 8, "--batch", 3, "--embedding", 4)
    assert result.exit_code == 0, result.output
    assert "head.tail.1.P" in result.output and " 0 failed" in result.output
    refused = CliRunner().invoke(cli, ["gradcheck", "--adaptive"])
    assert refused.exit_code == 2 and "--vocab >= 6" in refused.output


def test_gradcheck_passes_and_can_fail():
    ok = invoke("gradcheck", "--cell", "gru", "--layers", 2)
    assert ok.exit_code == 0 and "0 failed" in ok.output
    strict = invoke("gradcheck", "--cell", "rnn", "--threshold", 0)
    assert strict.exit_code == 1 and "FAIL" in strict.output


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_resume_continues_exactly(tmp_path, corpus, dtype):
    extra = {"dtype": dtype, "max_steps": 12}
    model = {"dropout": 0.1, "num_layers": 2}  # dropout: the RNG must resume too
    full = tmp_path / "full"
    assert invoke("train", "--config", write_config(tmp_path, corpus, train=extra, model=model),
               "--out", full, "--no-progress").exit_code == 0
    half = tmp_path / "half"
    assert invoke("train", "--config", write_config(tmp_path, corpus, train={**extra, "max_steps": 7}, model=model),
               "--out", half, "--no-progress").exit_code == 0
    resumed = invoke("train", "--resume", half / "last.npz", "--set", "train.max_steps=12", "--no-progress")
    assert resumed.exit_code == 0, resumed.output

    assert [r["loss"] for r in records(half, "train")] == [r["loss"] for r in records(full, "train")]
    a, _ = load_checkpoint(full / "last.npz")
    b, _ = load_checkpoint(half / "last.npz")
    for key in a:
        if dtype == "float64":
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        else:
            np.testing.assert_allclose(a[key], b[key], rtol=0, atol=1e-6, err_msg=key)


def test_init_from_starts_a_new_run_from_the_weights(trained, tmp_path, corpus):
    config = write_config(tmp_path, corpus, train={"max_steps": 2})
    result = invoke("train", "--config", config, "--init-from", trained / "last.npz", "--out",
                 tmp_path / "o", "--no-progress")
    assert result.exit_code == 0, result.output
    _, meta = load_checkpoint(tmp_path / "o" / "last.npz")
    assert meta["progress"]["step"] == 2


def test_init_from_with_another_vocabulary_is_refused(trained, tmp_path):
    other = tmp_path / "other.txt"
    other.write_text("abcdefgh " * 2000, encoding="utf-8")
    config = write_config(tmp_path, other)
    result = CliRunner().invoke(cli, ["train", "--config", str(config), "--init-from",
                                      str(trained / "last.npz"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "--init-from" in result.output and "vocabulary" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "o" / "last.npz").exists()


def test_a_second_fresh_run_does_not_overwrite_the_first(trained, tmp_path, corpus):
    config = write_config(tmp_path, corpus)
    result = CliRunner().invoke(cli, ["train", "--config", str(config), "--out", str(trained)])
    assert result.exit_code == 2 and "--resume" in result.output


def test_overwrite_removes_the_old_runs_files_before_training(tmp_path, corpus, monkeypatch):
    out = tmp_path / "run"
    out.mkdir()
    for name in ("last.npz", "best.npz", "metrics.jsonl", "samples.txt"):
        (out / name).write_text("old run", encoding="utf-8")
    seen = {}

    def crash(loop):  # stands in for a run that dies at once
        seen["files"] = sorted(p.name for p in loop.run_dir.iterdir())
        raise KeyboardInterrupt

    monkeypatch.setattr("charrnn.train._Loop.run_until_stopped", crash)
    config = write_config(tmp_path, corpus)
    CliRunner().invoke(cli, ["train", "--config", str(config), "--out", str(out), "--overwrite"])
    assert seen["files"] == ["config.yaml"]


def test_sigint_saves_a_checkpoint_that_resumes(tmp_path, corpus, assert_resumes):
    config = write_config(tmp_path, corpus, train={"max_steps": 100_000, "eval_every": 100_000})
    out = tmp_path / "run"
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "charrnn", "train", "--config", str(config),
                             "--out", str(out), "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 60
    while time.time() < deadline and len(_lines(out / "metrics.jsonl")) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "--resume" in err and "Traceback" not in err
    assert_resumes(out)


def _lines(path):
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []


def test_python_dash_m_and_version():
    result = subprocess.run([sys.executable, "-m", "charrnn", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("charrnn ")


@pytest.mark.parametrize("command", sorted(cli.commands))
def test_the_readme_shows_each_commands_options_as_help_does(repo_root, command):
    readme = " ".join((repo_root / "README.md").read_text(encoding="utf-8").split())
    options = invoke(command, "--help").output.split("Options:\n", 1)[1]
    options = [line for line in options.splitlines() if not line.strip().startswith("-h, --help")]
    assert f"charrnn {command} " in readme  # also for a command whose only option is --help
    assert " ".join(" ".join(options).split()) in readme
