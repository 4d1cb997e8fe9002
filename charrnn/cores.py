"""How many CPU cores this process may use: the scheduler's affinity mask, capped by a cgroup
CPU quota (a container limited to 1.5 CPUs gets 1), never by os.cpu_count() alone, which counts
the machine's cores whether or not this process may run on them."""

from __future__ import annotations

import math
import os
from pathlib import Path


def available_cores(proc: Path = Path("/proc/self/cgroup"), sysfs: Path = Path("/sys/fs/cgroup")) -> int:
    """Cores this process may keep busy, at least 1. proc and sysfs are parameters for tests."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    quota = cgroup_quota(proc, sysfs)
    if quota is not None:
        cores = min(cores, max(1, math.floor(quota)))  # a fraction of a core cannot run a worker
    return max(1, cores)


def cgroup_quota(proc: Path, sysfs: Path) -> float | None:
    """The tightest CPU quota, in cores, of this process's cgroup and its parents (cgroup v2
    cpu.max, or v1 cpu.cfs_quota_us / cpu.cfs_period_us); None when there is none or it cannot
    be read."""
    try:
        lines = proc.read_text().splitlines()
    except OSError:
        return None
    quotas = []
    for line in lines:
        hierarchy, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if hierarchy == "0" and controllers == "":  # v2: one unified hierarchy
            quotas += _along(sysfs, path, _v2_quota)
        elif "cpu" in controllers.split(","):
            for mount in (sysfs / controllers, sysfs / "cpu", sysfs / "cpu,cpuacct"):
                if mount.is_dir():
                    quotas += _along(mount, path, _v1_quota)
                    break
    return min(quotas) if quotas else None


def _along(mount: Path, path: str, read) -> list[float]:
    """The quotas read from the cgroup directory of path under mount and from each parent."""
    found = []
    directory = mount / path.strip("/")
    while True:
        quota = read(directory)
        if quota is not None:
            found.append(quota)
        if directory == mount or mount not in directory.parents:
            return found
        directory = directory.parent


def _v2_quota(directory: Path) -> float | None:
    try:
        limit, period = (directory / "cpu.max").read_text().split()[:2]
        return None if limit == "max" else int(limit) / int(period)
    except (OSError, ValueError):
        return None


def _v1_quota(directory: Path) -> float | None:
    try:
        limit = int((directory / "cpu.cfs_quota_us").read_text())
        period = int((directory / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if limit <= 0 or period <= 0 else limit / period


# Read by OpenBLAS when it loads, in this order: the first positive count is its thread count.
_BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS")


def blas_threads(environ=os.environ) -> int:
    """The threads OpenBLAS splits a product over in this process: the count the environment
    sets, else one per core, at most one per available core."""
    for name in _BLAS_THREAD_VARIABLES:
        try:
            count = int(environ.get(name, ""))
        except ValueError:
            continue
        if count > 0:
            return min(count, available_cores())
    return available_cores()
