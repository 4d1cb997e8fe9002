"""Helpers for tests that drive `charrnn train` end to end: config files, the CLI, metrics."""

import copy
import json
from pathlib import Path

import yaml
from click.testing import CliRunner

from charrnn.cli import cli


def write_config(directory: Path, corpus: Path, name: str = "config.yaml", *, base: dict,
                 **sections: dict) -> Path:
    """Write directory/name: the config `base` (left unchanged) training on corpus, with each
    given section's keys updated, e.g. train={"max_steps": 2}."""
    cfg = copy.deepcopy(base)
    cfg["data"]["path"] = str(corpus)
    for section, values in sections.items():
        cfg[section].update(values)
    path = directory / name
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def invoke(*args, charset: str = "utf-8"):
    """Run the CLI in-process with stringified args; exceptions propagate as in a traceback."""
    return CliRunner(charset=charset).invoke(cli, [str(a) for a in args], catch_exceptions=False)


def records(run_dir: Path, event: str | None = None) -> list[dict]:
    """The metrics.jsonl records of a run in order: all, or those of one event ("train", ...)."""
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [r for r in map(json.loads, lines) if event is None or r["event"] == event]
