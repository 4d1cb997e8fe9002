"""Claims of the README that can go stale as the code moves, held to the code: the Python
example runs against today's API, and the layout lists every module of the package, each once."""

import re
import subprocess
import sys

import pytest


@pytest.fixture(scope="module")
def readme(repo_root):
    return (repo_root / "README.md").read_text(encoding="utf-8")


def test_the_python_example_runs_and_prints_what_the_readme_says_it_prints(readme, repo_root):
    section = readme.split("## Using it from Python", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    shown = section.split("prints:\n\n```text\n", 1)[1].split("```", 1)[0].splitlines()
    result = subprocess.run([sys.executable, "-c", code], cwd=repo_root, capture_output=True,
                            text=True, timeout=300, env={"OPENBLAS_NUM_THREADS": "1", "PATH": ""})
    assert result.returncode == 0, result.stderr
    printed = result.stdout.splitlines()
    # The digits depend on the CPU's floating-point kernels; the shape of the output does not.
    assert re.fullmatch(r"loss \d\.\d{3}", printed[0]) and re.fullmatch(r"loss \d\.\d{3}", shown[0])
    assert abs(float(printed[0].split()[1]) - float(shown[0].split()[1])) < 0.05
    assert printed[1] == shown[1] == "ROMEO:"


def test_the_layout_lists_every_module_once(readme, repo_root):
    layout = readme.split("## Layout", 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    listed = re.findall(r"^  (\w+)\.py ", layout, flags=re.M)
    modules = sorted(p.stem for p in (repo_root / "charrnn").glob("*.py") if p.stem != "__init__")
    assert sorted(listed) == modules
