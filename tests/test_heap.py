"""charrnn.heap: freed memory kept for reuse, so that repeated large temporaries stop faulting."""

import json
import os
import platform
import subprocess
import sys
import textwrap

import pytest

from charrnn import heap

ON_GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"

# Three float64 copies of (64, 6762) logits alive at once, then freed together, per "character",
# as poetry scores 64 candidates (charrnn.heap's docstring); prints the minor page faults of the
# last 20 of 30 rounds, once warm. SETUP runs first.
FAULTS = """
import json, resource, sys
import numpy as np
{setup}
logits = np.random.default_rng(0).standard_normal((64, 6762)).astype(np.float32)

def score():
    z = logits.astype(np.float64)
    top = z.max(axis=1, keepdims=True)
    return np.exp(z - top).sum(axis=1)

for _ in range(10):
    score()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    score()
print(json.dumps((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20))
"""


def run_python(script: str) -> str:
    """Run script in a fresh interpreter without the user's malloc settings; its stdout."""
    environ = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES" and not k.startswith("MALLOC_")}
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                          env=environ).stdout


def faults_per_round(setup: str) -> float:
    out = run_python(FAULTS.format(setup=textwrap.dedent(setup)))
    return json.loads(out.strip().splitlines()[-1])


def test_the_thresholds_are_set_where_the_c_library_is_glibc():
    assert heap.keep_freed_memory(environ={}) is ON_GLIBC


def test_the_users_own_thresholds_are_left_to_apply():
    for environ in ({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=131072"},
                    {"GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX512F:glibc.malloc.mmap_threshold=1"},
                    {"MALLOC_MMAP_THRESHOLD_": "65536"}, {"MALLOC_TRIM_THRESHOLD_": "0"}):
        assert heap.user_set_thresholds(environ)
        assert heap.keep_freed_memory(environ=environ) is False
    assert not heap.user_set_thresholds({"GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX512F"})


glibc_only = pytest.mark.skipif(not ON_GLIBC, reason="the thresholds are glibc's")


@glibc_only
def test_repeated_large_temporaries_make_no_page_faults_once_memory_is_kept():
    # glibc's own adaptive thresholds fault about 1,600 pages per round here.
    assert faults_per_round("from charrnn import heap\nassert heap.keep_freed_memory()") < 20


@glibc_only
def test_the_charrnn_command_keeps_freed_memory():
    setup = """
        import sys
        from charrnn import cli
        sys.argv = ["charrnn", "--version"]
        try:
            cli.main()
        except SystemExit:
            pass
        """
    assert faults_per_round(setup) < 20


def test_a_training_worker_keeps_freed_memory():
    # The worker runs until its pipe fails; here the shared blocks do not exist, so it reports
    # the error and returns at once, after the setting it makes first.
    setup = """
        from multiprocessing import Pipe
        from charrnn import heap, parallel
        calls = []
        heap.keep_freed_memory = lambda: calls.append(1)
        ours, theirs = Pipe()
        parallel._worker(theirs, {}, [], "charrnn-test-missing", "charrnn-test-missing")
        assert calls == [1], calls
        assert ours.recv()[0] == "error"
        """
    run_python(textwrap.dedent(setup))  # check=True: the asserts above hold
