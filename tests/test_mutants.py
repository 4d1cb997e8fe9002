"""tools/mutate.py stays applicable as the code moves: each mutant's text occurs exactly once in
its file and the mutated file still compiles (the pass itself runs outside the suite)."""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("mutate", ROOT / "tools" / "mutate.py")
mutate = importlib.util.module_from_spec(_spec)
sys.modules["mutate"] = mutate  # dataclasses look their module up there
_spec.loader.exec_module(mutate)


@pytest.mark.parametrize("mutant", mutate.MUTANTS, ids=lambda mu: mu.id)
def test_every_mutant_still_applies_once_and_compiles(mutant):
    text = (ROOT / mutant.path).read_text(encoding="utf-8")
    assert text.count(mutant.old) == 1, f"{mutant.id}: its text occurs {text.count(mutant.old)} times in {mutant.path}"
    compile(text.replace(mutant.old, mutant.new), mutant.path, "exec")
    for test in mutant.tests:
        assert (ROOT / test.split("::")[0]).exists(), f"{mutant.id}: {test} does not exist"
