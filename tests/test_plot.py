"""`charrnn plot`: reading metrics and the message when matplotlib is missing."""

import json
import sys

from click.testing import CliRunner

from charrnn.cli import cli
from charrnn.plot import read_metrics


def write_run(directory):
    directory.mkdir()
    lines = [json.dumps({"event": "train", "step": 10, "loss": 3.0, "elapsed": 1.0}),
             json.dumps({"event": "eval", "step": 10, "val_loss": 2.9, "elapsed": 1.2}),
             '{"event": "train", "st']  # cut short by a crash
    (directory / "metrics.jsonl").write_text("\n".join(lines), encoding="utf-8")
    return directory


def test_read_metrics_skips_a_truncated_line(tmp_path):
    events = read_metrics(write_run(tmp_path / "r"))
    assert [r["step"] for r in events["train"]] == [10]
    assert [r["val_loss"] for r in events["eval"]] == [2.9]


def test_missing_matplotlib_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    result = CliRunner().invoke(cli, ["plot", str(write_run(tmp_path / "r")), "-o", str(tmp_path / "c.png")])
    assert result.exit_code == 1
    assert "pip install 'charrnn[plot]'" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "c.png").exists()


def test_not_a_run_directory(tmp_path):
    result = CliRunner().invoke(cli, ["plot", str(tmp_path), "-o", str(tmp_path / "c.png")])
    assert result.exit_code == 1 and "metrics.jsonl" in result.output
