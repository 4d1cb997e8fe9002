"""A small run for the failure tests (test_bad_input.py, test_no_run_lost.py): a 20k-character
corpus with a few non-ASCII characters, its config, and the checks of a one-line error."""

import functools
import json

import numpy as np

import runs
from runs import invoke

# The corpus ends with a few non-ASCII characters so encodings and <unk> have something to bite on.
_EXTRA = "\nA café, a naïve rôle.\n"

SMALL_CONFIG = {
    "name": "t",
    "data": {"val_fraction": 0.05},
    "model": {"cell": "lstm", "hidden_size": 8, "num_layers": 1},
    "train": {"batch_size": 4, "seq_len": 16, "max_steps": 4, "eval_every": 2, "log_every": 1,
              "sample_length": 10, "seed": 1},
}
write_config = functools.partial(runs.write_config, base=SMALL_CONFIG)


def small_text(repo_root) -> str:
    shakespeare = (repo_root / "corpora" / "tinyshakespeare.txt").read_text(encoding="utf-8")
    return shakespeare[:20_000] + _EXTRA


def small_corpus(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("data") / "corpus.txt"
    path.write_text(text, encoding="utf-8")
    return path


def small_run(tmp_path_factory, corpus):
    """The run directory of SMALL_CONFIG trained to its end on corpus."""
    directory = tmp_path_factory.mktemp("trained")
    result = invoke("train", "--config", write_config(directory, corpus), "--out", directory / "run",
                    "--no-progress")
    assert result.exit_code == 0, result.output
    return directory / "run"


def assert_error(result, status, *needles):
    """Exit `status` and exactly one stderr line, the error, containing every needle."""
    assert result.exit_code == status, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("charrnn: error: "), lines[0]
    for needle in needles:
        assert str(needle) in lines[0], (needle, lines[0])


def assert_last_error(result, status, *needles):
    """As assert_error, for a run that printed progress before it failed."""
    assert result.exit_code == status, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("charrnn: error: ")]
    assert len(errors) == 1 and result.stderr.splitlines()[-1] == errors[0], result.stderr
    for needle in needles:
        assert str(needle) in errors[0], (needle, errors[0])


def listing(directory):
    return sorted(p.name for p in directory.iterdir())


def save_raw(path, arrays, meta):
    """A checkpoint-shaped file written behind save_checkpoint's back (np.savez may pickle)."""
    with open(path, "wb") as fh:
        np.savez(fh, **arrays, meta=np.array(json.dumps(meta)))
