"""Bad input: every failure is one line and an exit status, and a run that cannot start writes
nothing. Usage errors exit 2, runtime errors exit 1, each with a single "charrnn: error: ..."
line on stderr that names the file, option or key: corpora, configs and overrides, the command
line, checkpoints, sampling options, and outputs that refuse the text (a closed pipe, a full
stdout, an encoding without the characters, no memory).
"""

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import yaml

from charrnn.checkpoint import load_checkpoint, model_from_checkpoint
from charrnn.model import CharRNN

import small_run
from runs import invoke
from small_run import assert_error, listing, save_raw, write_config


@pytest.fixture(scope="module")
def text(repo_root):
    return small_run.small_text(repo_root)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, text):
    return small_run.small_corpus(tmp_path_factory, text)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, corpus):
    return small_run.small_run(tmp_path_factory, corpus)


# -- corpus -------------------------------------------------------------------------------------


def _corpus_case(kind, directory, text):
    """(data section, needles of the message) for one kind of bad training text."""
    path = directory / f"{kind}.txt"
    if kind == "missing":
        return {"path": str(path)}, [path, "no such file; check the path"]
    if kind == "directory":
        path.mkdir()
        return {"path": str(path)}, [path, "directory"]
    if kind == "empty":
        path.write_bytes(b"")
        return {"path": str(path)}, [path, "empty; give a file that holds text"]
    if kind == "binary":
        path.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 40)
        return {"path": str(path)}, [path, "binary", "NUL byte at offset 4"]
    if kind == "invalid-utf8":
        path.write_bytes(text[:1000].encode("utf-8") + b"\xff\xfe" + text[1000:2000].encode("utf-8"))
        return {"path": str(path)}, [path, "not valid UTF-8 at byte offset 1000", "data.encoding"]
    if kind == "too-short":
        path.write_text(text[:50], encoding="utf-8")
        return {"path": str(path)}, [path, "needs at least 65", "lower train.batch_size or train.seq_len"]
    if kind == "val-fraction-too-small":
        path.write_text(text[:3000], encoding="utf-8")
        return ({"path": str(path), "val_fraction": 0.0005},
                [path, "data.val_fraction", "leaves 1 for validation", "at least 2"])
    assert kind == "val-path-too-small"
    path.write_text("x", encoding="utf-8")
    return {"val_path": str(path)}, [path, "validation text has 1 character", "data.val_path"]


@pytest.mark.parametrize("kind", ["missing", "directory", "empty", "binary", "invalid-utf8", "too-short",
                                  "val-fraction-too-small", "val-path-too-small"])
def test_a_bad_corpus_stops_train_before_anything_is_written(tmp_path, corpus, text, kind):
    data, needles = _corpus_case(kind, tmp_path, text)
    config = write_config(tmp_path, corpus, data=data)
    result = invoke("train", "--config", config, "--out", tmp_path / "out", "--no-progress")
    assert_error(result, 1, *needles)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", ["missing", "directory", "empty", "binary", "invalid-utf8"])
def test_a_bad_text_file_fails_eval_in_one_line(trained, tmp_path, text, kind):
    data, needles = _corpus_case(kind, tmp_path, text)
    result = invoke("eval", trained / "last.npz", data["path"])
    assert_error(result, 1, *needles)
    assert result.stdout == ""


def test_a_latin1_corpus_needs_and_works_with_its_encoding(tmp_path, text):
    latin = tmp_path / "latin1.txt"
    latin.write_bytes(text.encode("latin-1"))
    offset = text.index("é")  # everything before it is ASCII: one byte per character
    config = write_config(tmp_path, latin)
    wrong = invoke("train", "--config", config, "--out", tmp_path / "out", "--no-progress")
    assert_error(wrong, 1, latin, f"byte offset {offset}", "--encoding / data.encoding")
    assert not (tmp_path / "out").exists()

    right = invoke("train", "--config", config, "--set", "data.encoding=latin-1", "--out",
                   tmp_path / "out", "--no-progress")
    assert right.exit_code == 0, right.output
    model, vocab = model_from_checkpoint(*load_checkpoint(tmp_path / "out" / "last.npz"), "last.npz")
    assert "é" in vocab and "ï" in vocab
    assert_error(invoke("eval", tmp_path / "out" / "last.npz", latin), 1, latin, f"byte offset {offset}")
    scored = invoke("eval", tmp_path / "out" / "last.npz", latin, "--encoding", "latin-1")
    assert scored.exit_code == 0 and "bits/char" in scored.stdout


def test_an_unknown_encoding_is_a_usage_error(trained, tmp_path, corpus):
    config = write_config(tmp_path, corpus)
    assert_error(invoke("train", "--config", config, "--set", "data.encoding=klingon", "--out",
                        tmp_path / "out"), 2, "data.encoding", "klingon")
    for name in ("klingon", "base64"):
        assert_error(invoke("eval", trained / "last.npz", corpus, "--encoding", name), 2, "--encoding", name)
    assert not (tmp_path / "out").exists()


def test_a_vocabulary_over_the_cap_reads_the_rarest_characters_as_unk(tmp_path, corpus, text):
    distinct = len(set(text))
    config = write_config(tmp_path, corpus, data={"max_vocab": 12})
    result = invoke("train", "--config", config, "--out", tmp_path / "out", "--no-progress")
    assert result.exit_code == 0, result.output
    assert (f"data.max_vocab=12: the text has {distinct} distinct characters; "
            f"the {distinct - 11} rarest are read as <unk>") in result.stderr
    _, vocab = model_from_checkpoint(*load_checkpoint(tmp_path / "out" / "last.npz"), "last.npz")
    assert len(vocab) == 12 and vocab.chars[-1] == "<unk>" and "é" not in vocab
    # text full of characters the capped vocabulary lacks is scored through <unk>, not refused
    other = tmp_path / "other.txt"
    other.write_text("Zebras quietly jog; Ä Ö Ü ß ñ.", encoding="utf-8")
    scored = invoke("eval", tmp_path / "out" / "last.npz", other)
    assert scored.exit_code == 0 and "outside the vocabulary" not in scored.stdout


# -- config -------------------------------------------------------------------------------------


@pytest.mark.parametrize("body, needles", [
    ("name: t\ndata: {path: x\nmodel: 3\n", ["line 3, column", "invalid YAML"]),
    ("- a list\n- not a mapping\n", ["top level must be a mapping", "got list"]),
    ("trian: {max_steps: 3}\n", ["unknown key 'trian'", "did you mean 'train'"]),
    ("train: {learnig_rate: 0.1}\n", ["'train.learnig_rate'", "did you mean 'train.learning_rate'"]),
    ("train: {batch_size: many}\n", ["train.batch_size must be an integer", "'many'"]),
    ("model: {dropout: yes}\n", ["model.dropout must be a number"]),
    ("train: {learning_rate: -0.1}\n", ["train.learning_rate must be > 0"]),
    ("train: {learning_rate: 0}\n", ["train.learning_rate must be > 0"]),
    ("train: {seq_len: 0}\n", ["train.seq_len must be >= 1"]),
    ("model: {dropout: 1.0}\n", ["model.dropout must be >= 0 and < 1"]),
    ("model: {hidden_size: 0}\n", ["model.hidden_size must be >= 1"]),
    ("model: {num_layers: 500}\n", ["model.num_layers must be >= 1 and <= 16"]),
    ("model: {cell: transformer}\n", ["model.cell must be one of lstm, gru, rnn"]),
    ("train: {optimizer: lbfgs}\n", ["train.optimizer must be one of sgd, adagrad, rmsprop, adam"]),
])
def test_a_bad_config_is_a_usage_error_that_writes_nothing(tmp_path, body, needles):
    config = tmp_path / "bad.yaml"
    config.write_text(body, encoding="utf-8")
    result = invoke("train", "--config", config, "--out", tmp_path / "out", "--no-progress")
    assert_error(result, 2, config, *needles)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("override, needles", [
    ("train.learning_rate=-1", ["--set train.learning_rate=-1", "must be > 0"]),
    ("model.num_layers=0", ["--set model.num_layers=0", "must be >= 1"]),
    (f"model.hidden_size={10**20}", ["model.hidden_size must be >= 1 and <= 65536"]),
    (f"train.sample_length={10**20}", ["train.sample_length must be >= 0 and <= 1e+06"]),
    ("train.seq_lenn=3", ["unknown key", "did you mean 'train.seq_len'"]),
    ("train.optimizer=adamw", ["train.optimizer must be one of"]),
])
def test_a_bad_override_names_the_option(tmp_path, corpus, override, needles):
    result = invoke("train", "--config", write_config(tmp_path, corpus), "--set", override,
                    "--out", tmp_path / "out")
    assert_error(result, 2, *needles)
    assert not (tmp_path / "out").exists()


def test_yaml_tags_that_build_python_objects_never_run(tmp_path, corpus):
    marker = tmp_path / "MARKER"
    payload = f'!!python/object/apply:os.mkdir ["{marker}"]'
    documents = [f"data: {{path: {corpus}, encoding: {payload}}}\n",
                 f"train: {payload}\n",
                 f"name: !!python/object/new:os.mkdir ['{marker}']\n",
                 "model: !!python/name:os.system\n"]
    for index, document in enumerate(documents):
        config = tmp_path / f"evil{index}.yaml"
        config.write_text(document, encoding="utf-8")
        result = invoke("train", "--config", config, "--out", tmp_path / "out")
        assert not marker.exists(), document
        assert_error(result, 2, config, "YAML tag", "not allowed")
    result = invoke("train", "--config", write_config(tmp_path, corpus), "--set",
                    f"train.seed={payload}", "--out", tmp_path / "out")
    assert_error(result, 2, "--set train.seed=", "not allowed")
    assert not marker.exists() and not (tmp_path / "out").exists()
    # the payload is live: an unsafe loader would have run it
    yaml.unsafe_load(documents[0])
    assert marker.is_dir()


@pytest.mark.parametrize("args, status, needles", [
    (["train", "--bogus"], 2, ["No such option '--bogus'", "charrnn train --help"]),
    (["train"], 2, ["--config FILE is required"]),
    (["train", "--config"], 2, ["'--config' requires an argument", "charrnn train --help"]),
    (["sample"], 2, ["Missing argument 'CHECKPOINT'", "charrnn sample --help"]),
    (["eval", "x.npz", "--batch-size", "0"], 2, ["'--batch-size'", "charrnn eval --help"]),
    (["gradcheck", "--threshold", "nan"], 2, ["--threshold must be a finite number >= 0"]),
    (["gradcheck", "--seed", "-1"], 2, ["'--seed'"]),
    (["prepare-tang", "raw", "out", "--seed", "-1"], 2, ["'--seed'"]),
    (["sample", "x.npz", "--length", "lots"], 2, ["'--length'", "'lots' is not a valid integer"]),
    (["sample", "x.npz", "--on-unknown", "guess"], 2, ["'--on-unknown'", "'guess' is not one of"]),
    (["frobnicate"], 2, ["No such command 'frobnicate'"]),
    (["--bogus", "train"], 2, ["No such option '--bogus'", "(see 'charrnn --help')"]),
    ([], 2, ["Missing command", "charrnn --help"]),
])
def test_click_parsing_errors_are_one_line(args, status, needles):
    assert_error(invoke(*args), status, *needles)


# -- checkpoints --------------------------------------------------------------------------------


class _Payload:
    """Unpickling this makes a directory: proof that a pickle was (or was not) loaded."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def _bad_checkpoint(kind, good, directory, marker):
    """(path, needles) of a damaged checkpoint of this kind, made from the good one."""
    path = directory / f"{kind}.npz"
    arrays, meta = load_checkpoint(good)
    data = good.read_bytes()
    if kind == "missing":
        pass
    elif kind == "not-npz":
        path.write_text("step 10: loss 1.2\n", encoding="utf-8")
    elif kind == "truncated-half":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "truncated-tail":
        path.write_bytes(data[:-30])
    elif kind == "newer-format":
        save_raw(path, arrays, {**meta, "format_version": 99})
    elif kind == "unknown-format":
        save_raw(path, arrays, {**meta, "format_version": "two"})
    elif kind == "missing-array":
        save_raw(path, {k: v for k, v in arrays.items() if k != "head.W"}, meta)
    elif kind == "misshapen-array":
        save_raw(path, {**arrays, "head.W": arrays["head.W"][:3]}, meta)
    elif kind == "negative-size":
        save_raw(path, arrays, {**meta, "model": {**meta["model"], "embedding_size": -5}})
    elif kind == "no-layers":
        save_raw(path, arrays, {**meta, "model": {**meta["model"], "num_layers": 0}})
    elif kind == "nan-parameter":
        save_raw(path, {**arrays, "head.b": np.full_like(arrays["head.b"], np.nan)}, meta)
    elif kind == "pickled-member":
        save_raw(path, {**arrays, "extra": np.array([_Payload(marker)], dtype=object)}, meta)
    elif kind == "pickle-file":
        path.write_bytes(pickle.dumps(_Payload(marker)))
    elif kind == "npy-object-array":
        with open(path, "wb") as fh:
            np.save(fh, np.array([_Payload(marker)], dtype=object), allow_pickle=True)
    needles = {"missing": ["no such checkpoint file"], "not-npz": ["not a charrnn checkpoint"],
               "truncated-half": ["damaged or truncated"], "truncated-tail": ["damaged or truncated"],
               "newer-format": ["newer charrnn (format 99)", "upgrade"],
               "unknown-format": ["unknown checkpoint format 'two'"],
               "missing-array": ["missing parameter array 'head.W'"],
               "misshapen-array": ["parameter 'head.W'", "expected float32[8,"],
               "negative-size": ["invalid model description (model.embedding_size must be >= 0", "got -5"],
               "no-layers": ["invalid model description (model.num_layers must be >= 1", "got 0"],
               "nan-parameter": ["parameter 'head.b' holds NaN"],
               "pickled-member": ["pickled objects; refusing to load"],
               "pickle-file": ["not a charrnn checkpoint"],
               "npy-object-array": ["not a charrnn checkpoint"]}[kind]
    return path, needles


_CHECKPOINT_KINDS = ["missing", "not-npz", "truncated-half", "truncated-tail", "newer-format",
                     "unknown-format", "missing-array", "misshapen-array", "negative-size", "no-layers",
                     "nan-parameter", "pickled-member",
                     "pickle-file", "npy-object-array"]


@pytest.mark.parametrize("kind", _CHECKPOINT_KINDS)
def test_a_bad_checkpoint_fails_every_command_in_one_line(trained, tmp_path, corpus, kind):
    marker = tmp_path / "UNPICKLED"
    home = tmp_path / "ckpt"
    home.mkdir()
    path, needles = _bad_checkpoint(kind, trained / "last.npz", home, marker)
    before = listing(home)
    config = write_config(tmp_path, corpus)
    commands = [["sample", path, "--length", 5], ["eval", path, corpus], ["info", path],
                ["train", "--resume", path, "--no-progress"],
                ["train", "--config", config, "--init-from", path, "--out", tmp_path / "out"]]
    for command in commands:
        result = invoke(*command)
        assert_error(result, 1, path, *needles)
        assert result.stdout == ""
    assert listing(home) == before  # --resume wrote no config.yaml or metrics.jsonl next to it
    assert not (tmp_path / "out").exists()
    assert not marker.exists()


def test_a_checkpoint_with_damaged_progress_or_no_config_fails_in_one_line(trained, tmp_path):
    arrays, meta = load_checkpoint(trained / "last.npz")
    odd = tmp_path / "odd-progress.npz"
    save_raw(odd, arrays, {**meta, "progress": ["not", "a", "mapping"]})
    result = invoke("info", odd)
    assert result.exit_code == 0, result.output
    assert "progress     step ?, epoch ?, trained ?" in result.stdout
    bare = tmp_path / "no-config.npz"
    save_raw(bare, arrays, {k: v for k, v in meta.items() if k != "config"})
    assert_error(invoke("eval", bare, "--val"), 1, bare, "holds no training config", "FILES")
    bad_batch = tmp_path / "bad-batch.npz"
    config = {**meta["config"], "train": {**meta["config"]["train"], "batch_size": "many"}}
    save_raw(bad_batch, arrays, {**meta, "config": config})
    assert_error(invoke("eval", bad_batch, "--val"), 1, bad_batch, "batch_size is 'many'", "--batch-size")


def test_the_pickle_payload_is_live(trained, tmp_path):
    """The refusal above means something: loading with pickles allowed does run the payload."""
    marker = tmp_path / "UNPICKLED"
    path, _ = _bad_checkpoint("pickled-member", trained / "last.npz", tmp_path, marker)
    with np.load(path, allow_pickle=True) as npz:
        npz["extra"]
    assert marker.is_dir()


@pytest.mark.parametrize("change, needles", [
    ("state", ["carried state 'state.0.h'", "train.batch_size"]),
    ("optimizer", ["Adam state entry 'head.W.m' has shape (8, 3)", "train.optimizer"]),
    ("batch_size", ["carried state 'state.0.h'", "expected floats [2, 8]", "train.batch_size"]),
    ("optimizer_name", ["SGD state does not fit", "train.optimizer"]),
])
def test_resume_refuses_state_that_does_not_fit(trained, tmp_path, change, needles):
    home = tmp_path / "run"
    home.mkdir()
    path = home / "last.npz"
    arrays, meta = load_checkpoint(trained / "last.npz")
    extra = []
    if change == "state":
        arrays["state.0.h"] = arrays["state.0.h"][:1]
    elif change == "optimizer":
        arrays["optim.head.W.m"] = arrays["optim.head.W.m"][:, :3]
    elif change == "batch_size":
        extra = ["--set", "train.batch_size=2"]
    else:
        extra = ["--set", "train.optimizer=sgd"]
    save_raw(path, arrays, meta)
    result = invoke("train", "--resume", path, *extra, "--no-progress")
    assert_error(result, 1, path, *needles)
    assert listing(home) == ["last.npz"]


def test_init_from_a_checkpoint_with_another_vocabulary_is_refused(trained, tmp_path):
    other = tmp_path / "other.txt"
    other.write_text("abcdefgh ijkl\n" * 600, encoding="utf-8")
    result = invoke("train", "--config", write_config(tmp_path, other), "--init-from",
                    trained / "last.npz", "--out", tmp_path / "out")
    assert_error(result, 1, "--init-from", trained / "last.npz", "vocabulary")
    assert not (tmp_path / "out").exists()


def test_init_from_a_checkpoint_of_another_model_names_both_values(trained, tmp_path, corpus):
    result = invoke("train", "--config", write_config(tmp_path, corpus, model={"cell": "gru", "hidden_size": 9}),
                    "--init-from", trained / "last.npz", "--out", tmp_path / "out")
    assert_error(result, 1, "--init-from", "cell 'gru' (checkpoint: 'lstm')", "hidden_size 9 (checkpoint: 8)")
    assert not (tmp_path / "out").exists()


# -- sampling -----------------------------------------------------------------------------------


@pytest.mark.parametrize("options, status, needles", [
    (["--temperature", "-0.5"], 2, ["--temperature must be >= 0"]),
    (["--top-p", "0"], 2, ["--top-p must be in (0, 1]"]),
    (["--top-p", "1.5"], 2, ["--top-p must be in (0, 1]"]),
    (["--top-k", "0"], 2, ["--top-k must be >= 1"]),
    (["--length", "-3"], 2, ["'--length'", "not in the range 0<=x<=100000000"]),
    (["--prime", "ROMEO", "--length", str(10**20)], 2, ["'--length'", "not in the range"]),
    (["--num-samples", str(10**20)], 2, ["'--num-samples'", "not in the range 1<=x<=100000"]),
    (["--seed", "-1"], 2, ["--seed", "-1"]),
    (["--prime", "Zürich ∑"], 1, ["--prime", "'ü'", "'∑'", "--on-unknown"]),
])
def test_bad_sampling_options_print_nothing_but_the_error(trained, options, status, needles):
    result = invoke("sample", trained / "last.npz", *options)
    assert_error(result, status, *needles)
    assert result.stdout == ""


def _child_env():
    return {**os.environ, "OPENBLAS_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def test_sampling_into_a_closed_pipe_ends_quietly(trained):
    sampler = subprocess.Popen([sys.executable, "-m", "charrnn", "sample", str(trained / "last.npz"),
                                "--length", "200000", "--seed", "1"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_child_env())
    head = subprocess.Popen(["head", "-c", "10"], stdin=sampler.stdout, stdout=subprocess.PIPE)
    sampler.stdout.close()  # only head holds the read end now
    shown, _ = head.communicate(timeout=120)
    err = sampler.stderr.read()
    sampler.stderr.close()
    assert sampler.wait(timeout=120) == 0, err
    assert err == b"" and len(shown) == 10


def test_a_full_stdout_is_one_line_not_a_traceback(trained):
    with open("/dev/full", "wb") as full:
        done = subprocess.run([sys.executable, "-m", "charrnn", "sample", str(trained / "last.npz"),
                               "--length", "20000"], stdout=full, stderr=subprocess.PIPE, text=True,
                              env=_child_env(), timeout=120)
    assert done.returncode == 1
    assert done.stderr == "charrnn: error: cannot write the output: No space left on device\n"


def test_an_output_encoding_without_the_characters_is_one_line(trained):
    result = invoke("sample", trained / "last.npz", "--prime", "A café", "--length", 3, charset="ascii")
    assert_error(result, 1, "output encoding ascii", "'\\xe9'", "PYTHONIOENCODING=utf-8")


def test_running_out_of_memory_is_one_line_and_writes_nothing(tmp_path, corpus, monkeypatch):
    def exhausted(self, rng):
        raise MemoryError
    monkeypatch.setattr(CharRNN, "init_params", exhausted)
    result = invoke("train", "--config", write_config(tmp_path, corpus), "--out", tmp_path / "out")
    assert_error(result, 1, "out of memory", "model.hidden_size")
    assert not (tmp_path / "out").exists()
