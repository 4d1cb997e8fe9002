"""Training and sampling speed of charrnn against PyTorch's CPU LSTM/GRU on this machine.

For each configuration (cell, V, H, layers, B, T) it measures, in one run:

- training chars/s (B*T / median step time) of one full float32 step: forward, loss, backward,
  clip_grad_norm at 5, Adam. charrnn at its default settings (train.processes auto: the rows
  split between the worker processes, one BLAS thread each, that the row's size and this
  machine's cores call for; the "N" column) and in one process with --np-threads BLAS threads,
  against PyTorch (nn.LSTM/nn.GRU fed one-hot vectors like the
  charrnn model, + nn.Linear + cross_entropy + clip_grad_norm_ + Adam), PyTorch with whichever
  of its oneDNN (mkldnn) and native kernels was faster in a 3-step pilot of each;
- the GEMM-only floor: the matrix products of the charrnn step alone (input projections, the T
  recurrent products forward and backward, weight gradients, head forward and backward), timed
  in NumPy with the same threads; "share" = floor time / charrnn step time;
- sampling chars/s with one stream (2,000 characters: the lean OneStream path of `charrnn sample`,
  and the general model.step + charrnn.sample.choose it replaced, timed alternately, against
  PyTorch in a Python loop with torch.multinomial under no_grad) and with 64 streams at once,
  each beside its floor, the step's matrix products alone (for one stream the products of one
  OneStream step, stacked where it stacks them; "share" = floor time / the step's time);
- the peak memory of charrnn training: ru_maxrss of a fresh process that built the model and ran
  the timed steps (everything: interpreter, parameters, Adam state, the step's temporaries),
  plus, with --processes N, N times the largest worker's (an upper bound of the sum), and
  the tracemalloc peak of the NumPy allocations made during one unsplit step.

Every measurement runs in its own fresh subprocess ("worker"): PyTorch's OpenMP pool and NumPy's
OpenBLAS pool both busy-wait between calls and would fight over two cores if they shared a
process, BLAS thread counts can only be set before the library loads, and a fresh process is
what makes ru_maxrss a per-configuration number. Within a run the two sides alternate
configuration by configuration; with --repeat R the whole run is repeated and every figure is
the median over the R runs.

    python benchmarks/bench_speed.py --json runs/bench.json            # all, median of 3 runs
    python benchmarks/bench_speed.py --configs 0,3 --repeat 1 --steps 20
    python benchmarks/bench_speed.py --configs gru:65:256:2:64:64 --no-torch
    python benchmarks/bench_speed.py --sampling-only                   # the sampling table alone

Without PyTorch installed the torch columns say n/a and everything else still runs.

OPENBLAS_CORETYPE (and OPENBLAS_L2_SIZE) in the environment override the kernels OpenBLAS
picks for the CPU, for charrnn's commands as for these workers; PyTorch does not read them. The
header names the kernels the NumPy workers run and warns when the environment forces them;
--blas-kernels own measures NumPy as OpenBLAS runs where they are not set.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

# (cell, V, H, layers, B, T[, head]); head "full" unless given. Targets follow a Zipf law
# (p(rank r) ~ 1/(r+1)), so that the adaptive head's clusters see a corpus's share of the rows
# (for V=6800: 75% in the shortlist, about as in the Tang poems' 80%).
CONFIGS = [
    ("lstm", 65, 128, 2, 32, 64),
    ("lstm", 65, 256, 2, 64, 64),
    ("lstm", 65, 512, 3, 32, 100),
    ("gru", 65, 256, 2, 64, 64),
    ("lstm", 6800, 256, 2, 64, 64),
    ("lstm", 6800, 512, 2, 32, 64),
    ("lstm", 6800, 256, 2, 32, 64),
    ("lstm", 6800, 256, 2, 32, 64, "adaptive"),
    ("lstm", 6800, 512, 2, 32, 64, "adaptive"),
]
MAX_NORM = 5.0
LEARNING_RATE = 2e-3
LOAD_WARNING = 0.5
# PyTorch runs this many steps (x20 characters when sampling) with its oneDNN kernels and with
# its native ones; the measurement proper then uses the faster setting.
TORCH_PILOT_STEPS = 3
# Environment variables that override OpenBLAS's own choice of kernels and cache sizes.
OPENBLAS_OVERRIDES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
# One-stream sampling times the lean and the general path alternately this many times each.
SAMPLE_ROUNDS = 3


# ---------------------------------------------------------------------------------------------
# Workers: each runs in a fresh process and prints one JSON object on its last stdout line.
# ---------------------------------------------------------------------------------------------

def _median(values: list[float]) -> float:
    return statistics.median(values)


def _timed_steps(step, warmup: int, steps: int) -> list[float]:
    """Seconds of each of `steps` calls of step() after `warmup` untimed ones."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def _max_rss_bytes() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _unpack(cfg) -> tuple:
    """(cell, V, H, L, B, T, head) of a config, head "full" when it is not given."""
    return (*cfg[:6], cfg[6] if len(cfg) > 6 else "full")


def _zipf_counts(V):
    """Expected counts per id (= rank) of a million tokens under p(r) ~ 1/(r+1)."""
    import numpy as np

    p = 1.0 / np.arange(1, V + 1)
    return np.round(1e6 * p / p.sum()).astype(np.int64)


def _adaptive_cutoffs(V):
    from charrnn.adaptive import default_cutoffs

    return default_cutoffs(_zipf_counts(V))


def _numpy_model(cfg):
    import numpy as np

    from charrnn.model import CharRNN, ModelSpec

    cell, V, H, L, B, T, head = _unpack(cfg)
    rng = np.random.default_rng(0)
    extra = {}
    if head == "adaptive":
        extra = dict(head="adaptive", head_cutoffs=_adaptive_cutoffs(V), head_order=list(range(V)))
    model = CharRNN(ModelSpec(V, H, L, cell=cell, **extra))
    model.init_params(rng)
    x = rng.integers(0, V, size=(B, T))
    counts = _zipf_counts(V)
    y = rng.choice(V, size=(B, T), p=counts / counts.sum())
    return model, x, y, rng


def worker_numpy_train(cfg, warmup, steps, processes):
    """charrnn training step: loss_and_grads + clip_grad_norm + Adam, the state carried along,
    the rows split between `processes` workers when it is above 1 (as train.processes does)."""
    import resource
    import tracemalloc

    from charrnn.optim import Adam, clip_grad_norm
    from charrnn.parallel import SplitBatch

    cell, V, H, L, B, T, _ = _unpack(cfg)
    model, x, y, _ = _numpy_model(cfg)
    optimizer = Adam(model.params)
    state = model.init_state(B)
    split = SplitBatch(model, processes) if processes > 1 else None
    window = split.loss_and_grads if split else model.loss_and_grads

    def step():
        nonlocal state
        _, grads, state = window(x, y, state)
        clip_grad_norm(grads, MAX_NORM)
        optimizer.step(model.params, grads, LEARNING_RATE)

    try:
        times = _timed_steps(step, warmup, steps)
    finally:
        if split:
            split.close()  # joins the workers, so that RUSAGE_CHILDREN now counts them
    rss = _max_rss_bytes()
    if split:
        rss += processes * resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        window = model.loss_and_grads
    # After the timed steps, so tracing cannot slow them down.
    tracemalloc.start()
    step()
    step_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {"times": times, "max_rss": rss, "step_peak": step_peak}


def worker_numpy_gemm(cfg, warmup, steps):
    """The matrix products of one charrnn training step, alone, with the layouts the cells use."""
    import numpy as np

    cell, V, H, L, B, T, head = _unpack(cfg)
    G = {"lstm": 4, "gru": 3, "rnn": 1}[cell] * H
    N = T * B
    rng = np.random.default_rng(0)

    def rand(*shape):
        return rng.standard_normal(shape, dtype=np.float32)

    # the head's products: (rows, H) x (H, width), once forward and twice backward, and for the
    # adaptive head each cluster's projection and output on the rows whose targets fall in it
    blocks = [(N, H, V)]
    if head == "adaptive":
        from charrnn.adaptive import projection_sizes

        cutoffs = _adaptive_cutoffs(V)
        counts = _zipf_counts(V)
        share = [counts[a:b].sum() / counts.sum() for a, b in zip(cutoffs, [*cutoffs[1:], V])]
        blocks = [(N, H, cutoffs[0] + len(cutoffs))]
        for i, d in enumerate(projection_sizes(H, len(cutoffs), 4.0)):
            rows = max(1, round(N * share[i]))
            blocks += [(rows, H, d), (rows, d, [*cutoffs[1:], V][i] - cutoffs[i])]
    head_arrays = [(rand(n, k), rand(k, m), rand(n, m)) for n, k, m in blocks]
    layers = []
    for layer in range(L):
        lay = {"Wh": rand(H, G), "WhT": rand(G, H), "hs": rand(T + 1, B, H), "dA": rand(T, B, G),
               "rec": np.empty((B, G), np.float32), "drec": np.empty((B, H), np.float32)}
        if layer > 0:  # layer 0 reads one-hot input: a row gather, no product
            lay.update(Wx=rand(H, G), x=rand(N, H), pre=np.empty((N, G), np.float32))
        layers.append(lay)

    def step():
        for lay in layers:
            hs, dA = lay["hs"], lay["dA"]
            if "Wx" in lay:
                np.matmul(lay["x"], lay["Wx"], out=lay["pre"])
            for t in range(T):
                np.matmul(hs[t], lay["Wh"], out=lay["rec"])
        for inp, weight, grad in head_arrays:
            np.matmul(inp, weight)
            np.matmul(inp.T, grad)
            np.matmul(grad, weight.T)
        for lay in reversed(layers):
            hs, dA = lay["hs"], lay["dA"]
            for t in range(T - 1, -1, -1):
                np.matmul(dA[t], lay["WhT"], out=lay["drec"])
            dA2 = dA.reshape(N, G)
            np.matmul(hs[:-1].reshape(N, H).T, dA2)
            if "Wx" in lay:
                np.matmul(lay["x"].T, dA2)
                np.matmul(dA2, lay["Wx"].T)

    return {"times": _timed_steps(step, warmup, steps)}


def worker_numpy_sample_floor(cfg, steps, rows=64):
    """The matrix products of one sampling step for `rows` streams, alone: h Wh for every
    layer, x Wx above the first (one-hot input is a row gather), and the head for every row
    (the adaptive head scores every cluster: its projections and outputs for every row). With
    rows = 1 these are the products of one OneStream step: (1, n) rows, and above the first
    layer, where charrnn.stepper.stack_pays, one matrix-vector product over the stacked weights
    instead of x Wx and h Wh (with the GRU's two zero blocks)."""
    import numpy as np

    from charrnn.cores import blas_threads
    from charrnn.stepper import stack_pays

    cell, V, H, L, B, T, head = _unpack(cfg)
    G = {"lstm": 4, "gru": 3, "rnn": 1}[cell] * H
    rng = np.random.default_rng(0)

    def rand(*shape):
        return rng.standard_normal(shape, dtype=np.float32)

    stacked_rows = 4 * H if cell == "gru" else G  # (G', D + H): the GRU keeps n's x and h parts apart
    stacked = []
    if rows == 1 and L > 1 and stack_pays((H * G, H * G), stacked_rows * 2 * H, blas_threads()):
        stacked = [(rand(stacked_rows, 2 * H), rand(2 * H), np.empty(stacked_rows, np.float32))
                   for _ in range(L - 1)]
    shapes = [(H, G)] * (1 if stacked else 2 * L - 1)  # h Wh of every layer, x Wx above the first
    if head == "adaptive":
        from charrnn.adaptive import projection_sizes

        cutoffs = _adaptive_cutoffs(V)
        shapes.append((H, cutoffs[0] + len(cutoffs)))
        for i, d in enumerate(projection_sizes(H, len(cutoffs), 4.0)):
            shapes += [(H, d), (d, [*cutoffs[1:], V][i] - cutoffs[i])]
    else:
        shapes.append((H, V))
    products = [(rand(rows, k), rand(k, m), np.empty((rows, m), np.float32)) for k, m in shapes] + stacked
    product = np.dot if rows == 1 else np.matmul  # the call OneStream makes, and model.step's @

    def step():
        for a, b, out in products:
            product(a, b, out=out)

    return {"times": _timed_steps(step, 20, steps)}


def worker_blas_core() -> dict:
    """The kernel family OpenBLAS runs in a NumPy worker ("Haswell", "SkylakeX", ...), read
    from the library NumPy loaded; "unknown" where that library or its symbol is not found."""
    import ctypes
    import glob

    import numpy as np

    libs = os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs", "*openblas*")
    for path in glob.glob(libs):
        lib = ctypes.CDLL(path)
        for name in ("scipy_openblas_get_corename64_", "scipy_openblas_get_corename", "openblas_get_corename"):
            if hasattr(lib, name):
                corename = getattr(lib, name)
                corename.restype = ctypes.c_char_p
                return {"core": corename().decode()}
    return {"core": "unknown"}


def worker_numpy_sample(cfg, chars, batch_steps):
    """charrnn sampling: one stream through the lean path `charrnn sample` takes (OneStream.step
    + draw, under one errstate per 32 characters as in sample.generate) and through the general
    one it took before (model.step + sample.choose, batch 1), alternately SAMPLE_ROUNDS times,
    the median of each; and 64 streams at once (model.step + choose)."""
    import numpy as np

    from charrnn.sample import choose

    model, _, _, rng = _numpy_model(cfg)
    stream = model.one_stream()

    def general(n):
        state, ids = model.init_state(1), np.zeros(1, dtype=np.int64)
        for _ in range(n):
            logits, state = model.step(ids, state)
            ids = choose(logits, rng)

    def lean(n):
        stream.reset()
        token = 0
        for start in range(0, n, 32):
            with np.errstate(over="ignore"):
                for _ in range(min(32, n - start)):
                    token = stream.draw(stream.step(token), rng)

    def chars_per_s(run, n):
        run(20)  # warm-up
        start = time.perf_counter()
        run(n)
        return n / (time.perf_counter() - start)

    rounds = {"b1": [], "b1_general": []}
    for _ in range(SAMPLE_ROUNDS):
        rounds["b1_general"].append(chars_per_s(general, chars))
        rounds["b1"].append(chars_per_s(lean, chars))
    result = {key: _median(values) for key, values in rounds.items()}
    state = model.init_state(64)
    ids = np.zeros(64, dtype=np.int64)
    for _ in range(20):  # warm-up
        logits, state = model.step(ids, state)
        ids = choose(logits, rng)
    start = time.perf_counter()
    for _ in range(batch_steps):
        logits, state = model.step(ids, state)
        ids = choose(logits, rng)
    result["b64"] = 64 * batch_steps / (time.perf_counter() - start)
    return result


def _torch_model(cfg, threads):
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cell, V, H, L, B, T, kind = _unpack(cfg)
    rnn = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](V, H, L)
    if kind == "adaptive":
        head = torch.nn.AdaptiveLogSoftmaxWithLoss(H, V, _adaptive_cutoffs(V), div_value=4.0,
                                                   head_bias=True)
    else:
        head = torch.nn.Linear(H, V)
    return torch, rnn, head


def _pick_kernel(torch, run, pilot):
    """Time run(pilot) with the oneDNN kernels on and off; the faster setting and both timings."""
    seconds = {}
    for name, enabled in (("onednn", True), ("native", False)):
        with torch.backends.mkldnn.flags(enabled=enabled):
            run(1)  # warm-up: first calls allocate and pick algorithms
            start = time.perf_counter()
            run(pilot)
            seconds[name] = time.perf_counter() - start
    best = min(seconds, key=seconds.get)
    return best, seconds


def worker_torch_train(cfg, warmup, steps, threads, pilot):
    """PyTorch's training step on one-hot input, with whichever of its oneDNN and native kernels
    a short pilot found faster."""
    torch, rnn, head = _torch_model(cfg, threads)
    import torch.nn.functional as F

    cell, V, H, L, B, T, kind = _unpack(cfg)
    params = [*rnn.parameters(), *head.parameters()]
    optimizer = torch.optim.Adam(params, lr=LEARNING_RATE)
    x = torch.randint(0, V, (T, B))
    counts = torch.from_numpy(_zipf_counts(V)).double()
    y = torch.multinomial(counts / counts.sum(), T * B, replacement=True)

    def loss_of(out):
        if kind == "adaptive":
            return head(out.reshape(T * B, H), y).loss
        return F.cross_entropy(head(out).reshape(T * B, V), y)
    zeros = torch.zeros(L, B, H)
    state = (zeros, zeros.clone()) if cell == "lstm" else zeros

    def step():
        nonlocal state
        out, state = rnn(F.one_hot(x, V).float(), state)
        loss = loss_of(out)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, MAX_NORM)
        optimizer.step()
        loss.item()
        state = tuple(s.detach() for s in state) if cell == "lstm" else state.detach()

    def run(n):
        for _ in range(n):
            step()

    kernel, pilot_seconds = _pick_kernel(torch, run, pilot)
    with torch.backends.mkldnn.flags(enabled=kernel == "onednn"):
        times = _timed_steps(step, warmup, steps)
    return {"times": times, "kernel": kernel,
            "pilot_chars_per_s": {k: pilot * B * T / s for k, s in pilot_seconds.items()}}


def worker_torch_sample(cfg, chars, threads, pilot):
    """PyTorch sampling, one stream: one-hot input, softmax, torch.multinomial, under no_grad,
    with the faster of the oneDNN and native kernels."""
    torch, rnn, head = _torch_model(cfg, threads)
    V, adaptive = cfg[1], _unpack(cfg)[6] == "adaptive"

    def run(n):
        x = torch.zeros(1, 1, V)
        idx, state = 0, None
        for _ in range(n):
            x.zero_()
            x[0, 0, idx] = 1.0
            out, state = rnn(x, state)
            probs = head.log_prob(out[0]).exp() if adaptive else torch.softmax(head(out[0]), dim=-1)
            idx = int(torch.multinomial(probs, 1))

    with torch.no_grad():
        kernel, pilot_seconds = _pick_kernel(torch, lambda n: run(n * 20), pilot)
        with torch.backends.mkldnn.flags(enabled=kernel == "onednn"):
            run(20)
            start = time.perf_counter()
            run(chars)
            return {"b1": chars / (time.perf_counter() - start), "kernel": kernel}


def run_worker(argv: list[str]) -> None:
    task, spec = argv[0], json.loads(argv[1])
    cfg = tuple(spec.get("cfg", ()))
    if task.startswith("numpy"):
        from charrnn import heap

        heap.keep_freed_memory()  # as the charrnn command does at start
    if task == "blas_core":
        out = worker_blas_core()
    elif task == "numpy_train":
        out = worker_numpy_train(cfg, spec["warmup"], spec["steps"], spec["processes"])
    elif task == "numpy_gemm":
        out = worker_numpy_gemm(cfg, spec["warmup"], spec["steps"])
    elif task == "numpy_sample":
        out = worker_numpy_sample(cfg, spec["chars"], spec["batch_steps"])
    elif task == "numpy_sample_floor":
        out = worker_numpy_sample_floor(cfg, spec["steps"], spec["rows"])
    elif task == "torch_train":
        out = worker_torch_train(cfg, spec["warmup"], spec["steps"], spec["threads"], spec["pilot"])
    else:
        out = worker_torch_sample(cfg, spec["chars"], spec["threads"], spec["pilot"])
    print(json.dumps(out))


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------

def _blas_env(threads: int, kernels: str = "env") -> dict:
    """Environment for a NumPy worker: every BLAS flavour limited to `threads` threads; with
    kernels "own", without the variables that override OpenBLAS's choice of kernels for the CPU."""
    env = dict(os.environ)
    if kernels == "own":
        for name in OPENBLAS_OVERRIDES:
            env.pop(name, None)
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[name] = str(threads)
    return env


def spawn(task: str, spec: dict, env: dict | None = None) -> dict:
    """Run one worker in a fresh interpreter and return its JSON result."""
    cmd = [sys.executable, __file__, "--worker", task, json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {task} {spec['cfg']} failed:\n{proc.stderr.strip()}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def torch_available() -> str | None:
    """PyTorch's version, or None when it cannot be imported."""
    proc = subprocess.run([sys.executable, "-c", "import torch; print(torch.__version__)"],
                          capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else None


def machine_info(np_threads: int, torch_threads: int, torch_version: str | None) -> dict:
    import numpy as np

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    blas = "unknown"
    try:
        info = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        blas = f"{info.get('name')} {info.get('version')} ({info.get('openblas configuration', '')})"
    except Exception:  # the layout of show_config differs between NumPy versions
        pass
    return {
        "cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
        "numpy": np.__version__, "blas": blas.strip(), "numpy_blas_threads": np_threads,
        "torch": torch_version or "n/a", "torch_threads": torch_threads if torch_version else "n/a",
        "loadavg_start": os.getloadavg(),
    }


def processes_for(cfg, setting: str) -> int:
    """train.processes for a row: the number given, or what charrnn's auto picks for its size."""
    if setting != "auto":
        return int(setting)
    from charrnn.config import load_config
    from charrnn.start import worker_processes

    cell, V, H, L, B, T, _ = _unpack(cfg)
    row = load_config(None, [f"model.cell={cell}", f"model.hidden_size={H}", f"model.num_layers={L}",
                             f"train.batch_size={B}", f"train.seq_len={T}"])
    return worker_processes(row)[0]


def measure_once(cfg, args, have_torch: bool) -> dict:
    """One run of every measurement for one configuration, the two sides alternating."""
    cell, V, H, L, B, T, _ = _unpack(cfg)
    timing = {"cfg": cfg, "warmup": args.warmup, "steps": args.steps}
    env = _blas_env(args.np_threads, args.blas_kernels)
    row = {}
    if not args.sampling_only:
        row.update(_measure_training(cfg, args, have_torch, timing, env))
    sample = spawn("numpy_sample", {"cfg": cfg, "chars": args.sample_chars,
                                    "batch_steps": args.batch_sample_steps}, env)
    row["np_sample_b1"], row["np_sample_b1_general"] = sample["b1"], sample["b1_general"]
    row["np_sample_b64"] = sample["b64"]
    floor = spawn("numpy_sample_floor", {"cfg": cfg, "steps": args.batch_sample_steps, "rows": 64}, env)
    row["sample_b64_floor"] = 64 / _median(floor["times"])
    floor = spawn("numpy_sample_floor", {"cfg": cfg, "steps": args.sample_chars, "rows": 1}, env)
    row["sample_b1_floor"] = 1 / _median(floor["times"])
    if have_torch:
        spec = {"cfg": cfg, "chars": args.sample_chars, "threads": args.torch_threads,
                "pilot": TORCH_PILOT_STEPS}
        result = spawn("torch_sample", spec)
        row["torch_sample"], row["torch_sample_kernel"] = result["b1"], result["kernel"]
    return row


def _measure_training(cfg, args, have_torch: bool, timing: dict, env: dict) -> dict:
    """The training figures of measure_once."""
    cell, V, H, L, B, T, _ = _unpack(cfg)
    processes = processes_for(cfg, args.processes)
    row = {"processes": processes}
    train = spawn("numpy_train", dict(timing, processes=processes), env)
    row["np_train"] = B * T / _median(train["times"])
    row["max_rss"], row["step_peak"] = train["max_rss"], train["step_peak"]
    row["np_train_1p"] = (row["np_train"] if processes == 1 else
                          B * T / _median(spawn("numpy_train", dict(timing, processes=1), env)["times"]))
    if have_torch:
        spec = dict(timing, threads=args.torch_threads, pilot=TORCH_PILOT_STEPS)
        result = spawn("torch_train", spec)
        row["torch_train"] = B * T / _median(result["times"])
        row["torch_train_kernel"] = result["kernel"]
        row["torch_train_pilot"] = result["pilot_chars_per_s"]
    row["gemm_floor"] = B * T / _median(spawn("numpy_gemm", timing, env)["times"])
    return row


def summarise(runs: list[dict], have_torch: bool) -> dict:
    """Median over runs of every figure, then the derived ratios."""
    s = {key: _median([r[key] for r in runs]) for key, value in runs[0].items()
         if isinstance(value, (int, float))}
    if "np_train" in s:
        s["share_of_floor"] = s["np_train"] / s["gemm_floor"]
    s["b64_over_b1"] = s["np_sample_b64"] / s["np_sample_b1"]
    s["b64_share_of_floor"] = s["np_sample_b64"] / s["sample_b64_floor"]
    s["lean_over_general"] = s["np_sample_b1"] / s["np_sample_b1_general"]
    s["b1_share_of_floor"] = s["np_sample_b1"] / s["sample_b1_floor"]
    if have_torch:
        for what in ("train", "sample") if "np_train" in s else ("sample",):
            kernels = {r[f"torch_{what}_kernel"] for r in runs}
            s[f"torch_{what}_kernel"] = kernels.pop() if len(kernels) == 1 else "mixed"  # across runs
        if "np_train" in s:
            s["train_ratio"] = s["np_train"] / s["torch_train"]
        s["sample_ratio"] = s["np_sample_b1"] / s["torch_sample"]
        s["b1_floor_ratio"] = s["sample_b1_floor"] / s["torch_sample"]
    return s


def _fmt(value, spec: str) -> str:
    """format(value, spec), or "n/a" padded to the width spec gives."""
    width = int(spec.split(".")[0] or 0)
    return f"{'n/a':>{width}}" if value is None else format(value, spec)


def print_tables(results: list[dict], have_torch: bool) -> None:
    def label(cfg):
        cell, V, H, L, B, T, head = _unpack(cfg)
        return "{} {:>4} {:>3} {} {:>2} {:>3}{}".format(cell, V, H, L, B, T, " adapt" if head == "adaptive" else "")

    if "np_train" in results[0]["summary"]:
        _print_training(results, have_torch, label)
    print("\nSampling, chars/s (b1: the lean one-stream path; general: model.step + choose, batch 1;"
          " floors: the step's matrix products alone)")
    print(f"{'cell V H L B T':<30}{'b1':>9}{'general':>9}{'lean/gen':>9}{'torch b1':>9}{'kernel':>8}"
          f"{'ratio':>7}{'b1 floor':>9}{'/torch':>7}{'share':>6}{'b64':>9}{'b64/b1':>7}{'floor':>9}{'share':>6}")
    for r in results:
        s = r["summary"]
        torch_cols = (f"{s['torch_sample']:9.0f}{s['torch_sample_kernel']:>8}{s['sample_ratio']:7.2f}"
                      if have_torch else f"{'n/a':>9}{'n/a':>8}{'n/a':>7}")
        print(f"{label(r['config']):<30}{s['np_sample_b1']:9.0f}{s['np_sample_b1_general']:9.0f}"
              f"{s['lean_over_general']:9.2f}{torch_cols}{s['sample_b1_floor']:9.0f}"
              f"{_fmt(s.get('b1_floor_ratio'), '7.2f')}{s['b1_share_of_floor']:6.2f}"
              f"{s['np_sample_b64']:9.0f}{s['b64_over_b1']:7.1f}"
              f"{s['sample_b64_floor']:9.0f}{s['b64_share_of_floor']:6.2f}")


def _print_training(results: list[dict], have_torch: bool, label) -> None:
    print("\nTraining, chars/s (median step; median over runs)")
    print(f"{'cell V H L B T':<30}{'N':>2}{'charrnn':>9}{'1 proc':>8}{'torch':>9}{'kernel':>8}{'ratio':>7}"
          f"{'floor':>9}{'share':>7}{'RSS MB':>8}{'step MB':>8}")
    for r in results:
        s = r["summary"]
        torch_cols = (f"{_fmt(s.get('torch_train'), '9.0f')}{s.get('torch_train_kernel', 'n/a'):>8}"
                      f"{_fmt(s.get('train_ratio'), '7.2f')}") if have_torch else f"{'n/a':>9}{'n/a':>8}{'n/a':>7}"
        print(f"{label(r['config']):<30}{s['processes']:2.0f}{s['np_train']:9.0f}{_fmt(s.get('np_train_1p'), '8.0f')}"
              f"{torch_cols}{s['gemm_floor']:9.0f}"
              f"{s['share_of_floor']:7.2f}{s['max_rss'] / 2**20:8.0f}{s['step_peak'] / 2**20:8.0f}")


def parse_configs(text: str | None) -> list[tuple]:
    """'0,3' (indices into CONFIGS) and/or 'lstm:65:128:2:32:64[:adaptive]' specs, comma-separated."""
    if not text:
        return list(CONFIGS)
    out = []
    for item in text.split(","):
        item = item.strip()
        if item.isdigit():
            out.append(CONFIGS[int(item)])
        else:
            cell, *nums = item.split(":")
            head = nums.pop() if nums and nums[-1] in ("full", "adaptive") else "full"
            if cell not in ("lstm", "gru") or len(nums) != 5 or not all(n.isdigit() for n in nums):
                raise SystemExit(f"--configs: {item!r} is not an index or cell:V:H:L:B:T[:adaptive] "
                                 "(cell lstm or gru)")
            out.append((cell, *map(int, nums), *([head] if head == "adaptive" else [])))
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        run_worker(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--configs", help="comma-separated indices into the built-in list "
                    f"(0-{len(CONFIGS) - 1}) and/or cell:V:H:L:B:T[:adaptive] specs; default: all")
    ap.add_argument("--repeat", type=int, default=3, help="full runs; figures are medians over them")
    ap.add_argument("--steps", type=int, default=20, help="timed training steps per measurement")
    ap.add_argument("--warmup", type=int, default=3, help="untimed training steps first")
    ap.add_argument("--sample-chars", type=int, default=2000, help="characters sampled with one stream")
    ap.add_argument("--batch-sample-steps", type=int, default=200, help="steps sampled with 64 streams")
    ap.add_argument("--np-threads", type=int, default=2, help="OpenBLAS threads for NumPy")
    ap.add_argument("--processes", default="auto",
                    help="charrnn's train.processes for the charrnn column: auto (the default "
                         "setting, chosen per row) or a number")
    ap.add_argument("--torch-threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--no-torch", action="store_true", help="skip PyTorch even if installed")
    ap.add_argument("--sampling-only", action="store_true",
                    help="measure sampling only (no training, floor or memory figures)")
    ap.add_argument("--blas-kernels", choices=("env", "own"), default="env",
                    help="env: NumPy workers keep the environment's OPENBLAS_CORETYPE and "
                         "OPENBLAS_L2_SIZE, as charrnn's commands do; own: without them, so that "
                         "OpenBLAS picks its kernels for this CPU (as where they are not set)")
    ap.add_argument("--json", type=Path, help="write every raw figure and the medians here")
    args = ap.parse_args()
    if args.steps < 1 or args.repeat < 1 or not (args.processes == "auto" or args.processes.isdigit()
                                                 and int(args.processes) >= 1):
        raise SystemExit("--steps and --repeat must be >= 1, --processes auto or a number >= 1")
    configs = parse_configs(args.configs)

    torch_version = None if args.no_torch else torch_available()
    have_torch = torch_version is not None
    info = machine_info(args.np_threads, args.torch_threads, torch_version)
    print(f"CPU: {info['cpu']} ({info['cores']} cores); numpy {info['numpy']}, BLAS {info['blas']}")
    info["blas_kernels"] = args.blas_kernels
    info["openblas_core"] = spawn("blas_core", {}, _blas_env(args.np_threads, args.blas_kernels))["core"]
    info["openblas_own_core"] = spawn("blas_core", {}, _blas_env(args.np_threads, "own"))["core"]
    overrides = {name: os.environ[name] for name in OPENBLAS_OVERRIDES if name in os.environ}
    print(f"OpenBLAS kernels in the NumPy workers: {info['openblas_core']}"
          + (f" (its own choice for this CPU: {info['openblas_own_core']})"
             if info["openblas_own_core"] != info["openblas_core"] else ""))
    if overrides and args.blas_kernels == "env":
        print("WARNING: the environment sets " + ", ".join(f"{k}={v}" for k, v in overrides.items())
              + ", which charrnn's commands and these NumPy workers obey; PyTorch (MKL, oneDNN) does "
              "not read it. --blas-kernels own measures NumPy without it.")
    print(f"threads: NumPy BLAS {args.np_threads} (charrnn with workers: processes of 1, N per row), "
          f"torch {info['torch_threads']}; torch {info['torch']}")
    load = info["loadavg_start"]
    print(f"load average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if load[0] > LOAD_WARNING:
        print(f"WARNING: the 1-minute load average is above {LOAD_WARNING}: other processes are "
              "running and the figures will be noisy; rerun on an idle machine.")
    if not have_torch:
        why = "--no-torch" if args.no_torch else "PyTorch is not installed (pip install -e '.[bench]')"
        print(f"torch columns: n/a ({why})")

    runs = {cfg: [] for cfg in configs}
    for k in range(args.repeat):
        for cfg in configs:
            start = time.perf_counter()
            runs[cfg].append(measure_once(cfg, args, have_torch))
            print(f"run {k + 1}/{args.repeat} {' '.join(map(str, cfg))}: "
                  f"{time.perf_counter() - start:.0f} s", file=sys.stderr)
    results = [{"config": list(cfg), "runs": runs[cfg], "summary": summarise(runs[cfg], have_torch)}
               for cfg in configs]
    print_tables(results, have_torch)
    info["loadavg_end"] = os.getloadavg()
    print(f"\nload average at the end: {' '.join(f'{v:.2f}' for v in info['loadavg_end'])}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        options = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        args.json.write_text(json.dumps({"machine": info, "options": options, "results": results},
                                        indent=1))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
