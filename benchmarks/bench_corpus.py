"""Large-corpus benchmark: peak memory and load times of `charrnn train` on a generated corpus.

Builds a corpus of --size-mb megabytes by repeating a shipped text (tinyshakespeare, ASCII; or
the Tang training text with --tang), then runs `charrnn train` on it twice, each a fresh
process: the first run decodes the text and writes the encoded-corpus cache, the second finds
the cache and memory-maps it. For each run it prints the time from launch to the first
training step (the moment the first record reaches metrics.jsonl, watched every 10 ms), the
load throughput (corpus bytes / that time) and the peak resident memory (VmHWM) of the main
process and of each worker, read from /proc while the run lasts. Each run trains a 2x256 LSTM
(batch 64, seq_len 64, train.processes 2) for --steps steps, then stops.

    .venv/bin/python benchmarks/bench_corpus.py --size-mb 1024
    .venv/bin/python benchmarks/bench_corpus.py --size-mb 500 --tang

Everything goes to --dir (default runs/bench-corpus): the corpus, its cache and the runs.
"""

from __future__ import annotations

import argparse
import gzip
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def make_corpus(path: Path, size_mb: int, tang: bool) -> None:
    """path: the shipped text repeated to size_mb megabytes (whole repetitions, then a cut at a
    line end), unless it already has that size."""
    if tang:
        unit = gzip.decompress((ROOT / "corpora/tang/train.txt.gz").read_bytes())
    else:
        unit = (ROOT / "corpora/tinyshakespeare.txt").read_bytes()
    want = size_mb << 20
    if path.exists() and path.stat().st_size == want:
        return
    with open(path, "wb") as fh:
        written = 0
        while written + len(unit) <= want:
            fh.write(unit)
            written += len(unit)
        rest = unit[: want - written]
        rest = rest[: rest.rfind(b"\n") + 1] if b"\n" in rest else b""
        fh.write(rest)
        fh.write(b"\n" * (want - written - len(rest)))


def cpu_name() -> str:
    """The CPU's model name and family from /proc/cpuinfo (the figures depend on it)."""
    info = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        return platform.machine()
    return f"{info.get('model name', platform.machine())} (family {info.get('cpu family', '?')})"


def peak_rss(pid: int) -> int:
    """VmHWM of a process in bytes (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def descendants(pid: int) -> list[int]:
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    found = [int(c) for c in children]
    for child in list(found):
        found += descendants(child)
    return found


def run_once(cfg_path: Path, run_dir: Path, label: str, size: int) -> dict:
    metrics = run_dir / "metrics.jsonl"
    subprocess.run(["rm", "-rf", str(run_dir)], check=True)  # no earlier run's metrics to mistake
    began = time.monotonic()
    child = subprocess.Popen([sys.executable, "-m", "charrnn", "train", "--config", str(cfg_path),
                              "--out", str(run_dir), "--no-progress"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    first_step = None
    peaks: dict[int, int] = {}
    while child.poll() is None:
        if first_step is None and metrics.exists() and metrics.stat().st_size:
            first_step = time.monotonic() - began
        for pid in [child.pid, *descendants(child.pid)]:
            peaks[pid] = max(peaks.get(pid, 0), peak_rss(pid))
        time.sleep(0.01)
    output = child.stdout.read()
    if child.returncode:
        sys.exit(f"{label}: charrnn train failed:\n{output}")
    main = peaks.pop(child.pid, 0)
    workers = sorted(peaks.values(), reverse=True)
    return {"label": label, "first_step_s": first_step, "total_s": time.monotonic() - began,
            "load_mb_s": size / 2**20 / first_step if first_step else None,
            "main_peak_gb": main / 2**30, "worker_peaks_gb": [w / 2**30 for w in workers if w],
            "output": output}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024, help="corpus size in MiB [1024]")
    parser.add_argument("--tang", action="store_true", help="repeat the Tang text (6,700 characters)")
    parser.add_argument("--steps", type=int, default=3, help="training steps per run [3]")
    parser.add_argument("--processes", type=int, default=2, help="train.processes [2]")
    parser.add_argument("--dir", type=Path, default=ROOT / "runs" / "bench-corpus")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    corpus = args.dir / f"corpus-{'tang' if args.tang else 'ascii'}-{args.size_mb}mb.txt"
    make_corpus(corpus, args.size_mb, args.tang)
    cache = args.dir / "cache"
    subprocess.run(["rm", "-rf", str(cache)], check=True)
    cfg = {
        "name": "bench-corpus",
        "data": {"path": str(corpus), "val_fraction": 0.001, "cache_dir": str(cache)},
        "model": {"cell": "lstm", "hidden_size": 256, "num_layers": 2,
                  "embedding_size": 128 if args.tang else 0,
                  "head": "adaptive" if args.tang else "full"},
        "train": {"batch_size": 64, "seq_len": 64, "max_steps": args.steps, "log_every": 1,
                  "eval_every": 1_000_000, "eval_chars": 100_000, "sample_length": 0,
                  "warmup_steps": 0, "processes": args.processes},
    }
    cfg_path = args.dir / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    size = corpus.stat().st_size
    print(f"corpus {corpus.name}: {size / 2**20:,.0f} MiB; {cpu_name()}, "
          f"{os.cpu_count()} CPUs; lstm 2x256 B64 T64, train.processes {args.processes}, "
          f"{args.steps} steps")
    for label in ("first run (builds the cache)", "second run (cache)"):
        r = run_once(cfg_path, args.dir / "run", label, size)
        workers = ", ".join(f"{w:.2f}" for w in r["worker_peaks_gb"]) or "none"
        print(f"{label:30s} first step after {r['first_step_s']:6.2f} s "
              f"({r['load_mb_s']:6.0f} MiB/s of corpus), total {r['total_s']:6.1f} s, "
              f"peak RSS main {r['main_peak_gb']:.2f} GiB, workers {workers} GiB")


if __name__ == "__main__":
    main()
