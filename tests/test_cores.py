"""train.processes auto: the cores this process may use (affinity, cgroup v1 and v2 quotas),
the rule that turns them and the step's size into a number of processes, and a run with auto
equal bit for bit to the same run with that number given."""

import os

import numpy as np
import pytest

from charrnn import start
from charrnn.checkpoint import load_checkpoint
from charrnn.config import load_config
from charrnn.cores import available_cores, cgroup_quota

from runs import invoke, write_config


def _cgroup(tmp_path, proc_lines, files):
    proc = tmp_path / "cgroup"
    proc.write_text("".join(line + "\n" for line in proc_lines))
    sysfs = tmp_path / "sys"
    for relative, content in files.items():
        (sysfs / relative).parent.mkdir(parents=True, exist_ok=True)
        (sysfs / relative).write_text(content)
    sysfs.mkdir(exist_ok=True)
    return proc, sysfs


@pytest.mark.parametrize("lines, files, quota", [
    (["0::/job"], {"job/cpu.max": "150000 100000\n"}, 1.5),
    (["0::/job"], {"job/cpu.max": "max 100000\n"}, None),
    (["0::/a/b"], {"a/cpu.max": "100000 100000\n", "a/b/cpu.max": "400000 100000\n"}, 1.0),  # a parent is tighter
    (["4:cpu,cpuacct:/docker/x"], {"cpu,cpuacct/docker/x/cpu.cfs_quota_us": "200000\n",
                                   "cpu,cpuacct/docker/x/cpu.cfs_period_us": "100000\n"}, 2.0),
    (["1:cpu:/"], {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
    (["0::/job"], {"job/cpu.max": "garbage\n"}, None),
    (["4:memory:/x"], {}, None),
])
def test_the_cgroup_quota_in_cores(tmp_path, lines, files, quota):
    assert cgroup_quota(*_cgroup(tmp_path, lines, files)) == quota


def test_available_cores_is_the_affinity_capped_by_the_quota_rounded_down(tmp_path):
    affinity = len(os.sched_getaffinity(0))
    assert available_cores(tmp_path / "missing", tmp_path) == affinity
    proc, sysfs = _cgroup(tmp_path, ["0::/j"], {"j/cpu.max": "50000 100000\n"})
    assert available_cores(proc, sysfs) == 1  # half a core still runs one process
    proc, sysfs = _cgroup(tmp_path, ["0::/k"], {"k/cpu.max": "6400000 100000\n"})
    assert available_cores(proc, sysfs) == affinity  # a quota above the affinity changes nothing


@pytest.mark.parametrize("cores, batch, hidden, layers, expected", [
    (1, 64, 512, 3, 1),        # one core: one process
    (2, 32, 128, 1, 1),        # 2,048 per worker: too little to split
    (2, 32, 128, 2, 2),        # 4,096 per worker
    (2, 64, 256, 2, 2),
    (8, 64, 256, 2, 8),
    (8, 16, 256, 2, 2),        # the step's size caps it below the cores
    (4, 2, 4096, 4, 2),        # never more processes than rows
])
def test_auto_takes_the_cores_and_the_size_of_the_step(cores, batch, hidden, layers, expected):
    cfg = load_config(None, [f"train.batch_size={batch}", f"model.hidden_size={hidden}",
                             f"model.num_layers={layers}"])
    n, why = start.worker_processes(cfg, cores=cores)
    assert n == expected and why.startswith("train.processes auto: ") and f"{cores} core" in why


def test_an_explicit_count_is_kept():
    assert start.worker_processes(load_config(None, ["train.processes=3"]), cores=1)[0] == 3


BASE = {"name": "t", "data": {"val_fraction": 0.05},
        "model": {"cell": "lstm", "hidden_size": 16, "num_layers": 2, "dropout": 0.2},
        "train": {"batch_size": 256, "seq_len": 8, "max_steps": 4, "eval_every": 2, "sample_length": 0}}


def test_a_run_with_auto_equals_the_run_with_the_count_it_chose(tmp_path, repo_root, monkeypatch):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text((repo_root / "corpora" / "tinyshakespeare.txt").read_text(encoding="utf-8")[:60_000],
                      encoding="utf-8")
    monkeypatch.setattr(start, "available_cores", lambda: 2)
    auto = invoke("train", "--config", write_config(tmp_path, corpus, "a.yaml", base=BASE), "--out",
                  tmp_path / "auto", "--no-progress")
    assert auto.exit_code == 0, auto.output
    assert "train.processes auto: rows split between 2 processes (2 cores available" in auto.output
    given = invoke("train", "--config", write_config(tmp_path, corpus, "g.yaml", base=BASE, train={"processes": 2}),
                   "--out", tmp_path / "given", "--no-progress")
    assert given.exit_code == 0, given.output
    a, meta_a = load_checkpoint(tmp_path / "auto" / "last.npz")
    b, meta_b = load_checkpoint(tmp_path / "given" / "last.npz")
    assert meta_a["config"]["train"]["processes"] == "auto"  # resolved again on resume, wherever that is
    assert sorted(a) == sorted(b)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_blas_threads_is_the_environments_count_capped_by_the_cores(monkeypatch):
    from charrnn import cores

    monkeypatch.setattr(cores, "available_cores", lambda: 4)
    assert cores.blas_threads({}) == 4
    assert cores.blas_threads({"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "3"}) == 1
    assert cores.blas_threads({"OMP_NUM_THREADS": "3"}) == 3
    assert cores.blas_threads({"GOTO_NUM_THREADS": "2", "OMP_NUM_THREADS": "3"}) == 2
    assert cores.blas_threads({"OPENBLAS_NUM_THREADS": "16"}) == 4
    # Unset, empty, zero or not a number: the next variable, else one thread per core.
    assert cores.blas_threads({"OPENBLAS_NUM_THREADS": "", "OMP_NUM_THREADS": "0"}) == 4
    assert cores.blas_threads({"OPENBLAS_NUM_THREADS": "many", "GOTO_NUM_THREADS": "2"}) == 2
