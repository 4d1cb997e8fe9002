"""The house rules of the package layout, checked on the source: who may import what."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "charrnn"

# Each module may import only modules of a lower rank (imports point downward). atomic (0.5)
# sits between errors, which it uses, and config and checkpoint, which use it.
RANK = {
    "errors": 0, "interrupts": 0, "functional": 1, "corpus": 1, "reading": 1, "encoded": 2, "reference": 0, "atomic": 0.5, "metrics": 0.7, "names": 0, "cores": 0, "categorical": 0, "heap": 0, "cell_base": 1.5, "lstm": 1.7, "gru": 1.7, "rnn": 1.7, "cells": 2, "model": 3, "optim": 1, "sample": 2,
    "gradcheck": 4, "checkpoint": 4, "evaluate": 4, "parallel": 4, "poetry": 3, "tang": 4, "prosody": 1, "pingshui": 1, "adaptive": 2, "constraints": 2, "stepper": 2.5, "scansion": 4, "plot": 1,
    "config_fields": 0.8, "config": 1, "start": 4.5, "run_state": 4.5, "run_dir": 4.6, "train": 5, "cli_errors": 5.5, "cli": 6, "__init__": 6, "__main__": 7,
}
ONLY = {"click": {"cli", "cli_errors"}, "yaml": {"config"}, "tqdm": {"train"}}


def imports(module: str) -> set[str]:
    tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from .x import y
                found.add("charrnn." + (node.module or ""))
            else:
                found.add(node.module)
    return found


def test_every_module_has_a_rank():
    assert {p.stem for p in PACKAGE.glob("*.py")} == set(RANK)


@pytest.mark.parametrize("module", sorted(RANK))
def test_click_yaml_and_tqdm_stay_in_their_module(module):
    roots = {name.split(".")[0] for name in imports(module)}
    for library, allowed in ONLY.items():
        assert library not in roots or module in allowed, f"{module} imports {library}"


@pytest.mark.parametrize("module", sorted(RANK))
def test_imports_point_downward(module):
    for name in imports(module):
        if name.startswith("charrnn.") and name != "charrnn.":
            target = name.split(".")[1]
            assert RANK[target] < RANK[module], f"{module} imports {target}"
