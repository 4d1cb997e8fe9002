"""The training loop, as a straight narrative, and the only module that shows a progress bar.

    text -> vocab -> ids -> train / val split -> stream windows (B, T)
    loop: window -> loss, grads (state carried) -> clip -> optimizer step -> log
          every eval_every: val loss over the whole val split -> last.npz, best.npz, a sample
    stop: max_steps, max_epochs or max_time, whichever comes first; or a signal (state saved)

Everything that makes a run resumable bit for bit lives in one `Progress` record plus the
parameters, the optimizer slots, the carried hidden state and the dropout RNG, and all of it
goes into every checkpoint. The same capture serves the divergence guard: it rolls back to
the last saved state, in memory, and continues with a lower learning rate.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from . import __version__
from . import metrics
from .atomic import remove_stale_temporaries, replace_file
from .checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from .config import Config, config_to_dict, dump_config, load_config
from .corpus import BatchStream, Vocab, id_counts
from .encoded import load_corpus, names
from .errors import CharRNNError, UsageError
from .evaluate import bits_per_char, evaluate
from .interrupts import stop_signals
from .adaptive import default_cutoffs, frequency_order
from .model import CharRNN
from .optim import clip_grad_norm, clip_grad_value, hyperparameters, make_optimizer, learning_rate
from .parallel import SplitBatch
from .sample import generate

# A loss spike is judged against this exponential moving average of the training loss, once
# it has seen enough steps to mean something.
_AVG_DECAY = 0.95
_AVG_WARMUP = 20
_SAMPLE_TEMPERATURE = 0.8


@dataclasses.dataclass
class Progress:
    """Where a run is; stored in every checkpoint's meta so that --resume continues exactly."""

    step: int = 0            # optimizer updates done
    epoch: int = 0           # completed passes over the training text
    cursor: int = 0          # next window of the current epoch
    best_val: float = math.inf
    lr_scale: float = 1.0    # lowered by each divergence rollback
    rollbacks: int = 0
    loss_avg: float | None = None   # running average of the training loss (divergence guard)
    avg_steps: int = 0       # steps that went into loss_avg
    elapsed: float = 0.0     # seconds of training so far, over all resumed sessions


@dataclasses.dataclass
class Outcome:
    run_dir: Path
    progress: Progress
    signal: int | None = None   # set when a signal stopped the run (after saving last.npz)


# -- data ---------------------------------------------------------------------------------------


class _LoadingBars:
    """The progress callback of load_corpus: one tqdm bar per stage (counting, encoding,
    checking), on a terminal only and only for stages of at least _BAR_BYTES."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.stage, self.bar = None, None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled or total < _BAR_BYTES:
            return
        if stage != self.stage:
            self.close()
            self.stage = stage
            self.bar = tqdm(total=total, desc=stage, unit="B", unit_scale=True, unit_divisor=1024,
                            file=sys.stderr, dynamic_ncols=True, leave=False)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.stage, self.bar = None, None


_BAR_BYTES = 32 << 20


def _check_trainable(cfg: Config, train_ids: np.ndarray) -> None:
    """Refuse, before anything is written, a training text too short for one (B, T) window."""
    t = cfg.train
    need = t.batch_size * t.seq_len + 1  # one more: the target of the last input
    if len(train_ids) < need:
        raise CharRNNError(f"{names(cfg.data.path)}: the training text has {len(train_ids):,} "
                           f"characters but train.batch_size {t.batch_size} x train.seq_len "
                           f"{t.seq_len} needs at least {need:,}; lower train.batch_size or "
                           "train.seq_len, or use more text")


def build_model(cfg: Config, counts: np.ndarray) -> CharRNN:
    """The model cfg describes, for a vocabulary with these character counts (V,) in the
    training text: the adaptive head ranks characters by them and places its default cutoffs."""
    m = cfg.model
    head = {}
    if m.head == "adaptive":
        cutoffs = m.head_cutoffs if m.head_cutoffs is not None else default_cutoffs(counts)
        if not cutoffs or cutoffs[-1] >= len(counts):
            raise UsageError(f"model.head_cutoffs {cutoffs} must lie below the vocabulary size "
                             f"{len(counts)}; choose smaller ranks or model.head: full")
        head = dict(head_cutoffs=cutoffs, head_div=m.head_div, head_order=frequency_order(counts))
    return CharRNN(len(counts), m.hidden_size, m.num_layers, cell=m.cell,
                   embedding_size=m.embedding_size, dropout=m.dropout, peephole=m.peephole,
                   nonlinearity=m.nonlinearity, head=m.head, dtype=np.dtype(cfg.train.dtype), **head)


def initial_model(cfg: Config, train_ids: np.ndarray, vocab_size: int, counts: np.ndarray | None = None):
    """The model a run of cfg starts from, and the generator of its dropout masks.

    Both come from train.seed (two independent streams), so the same config draws the same
    initial weights and the same masks. The head's biases start at the training text's log
    unigram frequencies (CharRNN.set_unigram_biases). Returns (model, dropout_rng).
    """
    if counts is None:  # (V,) how often each id occurs in train_ids
        counts = id_counts(train_ids, vocab_size)
    model = build_model(cfg, counts)
    init_rng, dropout_rng = (np.random.default_rng(s)
                             for s in np.random.SeedSequence(cfg.train.seed).spawn(2))
    model.init_params(init_rng)
    model.set_unigram_biases(counts)
    return model, dropout_rng


def _optimizer_args(t) -> dict:
    """The train section's values of the hyperparameters the chosen optimizer takes (each is
    a train key of the same name)."""
    return {name: getattr(t, name) for name in hyperparameters(t.optimizer)}


def memory_estimate(model: CharRNN, optimizer_bytes: int, batch_size: int, seq_len: int) -> int:
    """Rough peak bytes of a training step: parameters, gradients, optimizer slots, activations
    (about 16 floats per hidden unit and timestep in the cells, two logit buffers in the head)."""
    H, V, L = model.hidden_size, model.vocab_size, model.num_layers
    per_step_floats = batch_size * seq_len * (L * 16 * H + 2 * V)
    return optimizer_bytes + model.dtype.itemsize * (2 * model.num_params() + per_step_floats)


# -- checkpoint capture and restore -----------------------------------------------------------


class _Run:
    """The mutable state of one training run and how it is saved and restored."""

    def __init__(self, cfg: Config, model: CharRNN, vocab: Vocab, optimizer, rng: np.random.Generator):
        self.cfg, self.model, self.vocab, self.optimizer, self.rng = cfg, model, vocab, optimizer, rng
        self.progress = Progress()
        self.state = model.init_state(cfg.train.batch_size)
        self.last_val: float | None = None

    def capture(self) -> tuple[dict, dict]:
        """(arrays, meta) of the whole run: what a checkpoint stores and a rollback restores."""
        arrays = {k: v.copy() for k, v in self.model.params.items()}
        arrays.update({f"optim.{k}": v for k, v in self.optimizer.state_dict().items()})
        for layer, (cell, arrs) in enumerate(zip(self.model.cells, self.state)):
            for name, value in zip(cell.state_names, arrs):
                arrays[f"state.{layer}.{name}"] = value.copy()
        meta = {
            "charrnn_version": __version__,
            "model": self.model.config(),
            "vocab": self.vocab.to_json(),
            "config": config_to_dict(self.cfg),
            "progress": dataclasses.asdict(self.progress),
            "rng": self.rng.bit_generator.state,
            "metrics": {"val_loss": self.last_val,
                        "val_bpc": None if self.last_val is None else bits_per_char(self.last_val)},
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        return arrays, meta

    def restore(self, arrays: dict, meta: dict, source: str) -> None:
        """Load parameters, optimizer slots, carried state, progress and RNG from a capture."""
        for key, value in self.model.params.items():
            value[...] = arrays[key]
        slots = {k[len("optim."):]: v for k, v in arrays.items() if k.startswith("optim.")}
        if not slots:
            raise CharRNNError(f"{source}: holds no optimizer state, so it cannot be resumed; "
                               "use --init-from to start a new run from its weights")
        try:
            self.optimizer.load_state_dict(slots)
        except CharRNNError as exc:
            raise CharRNNError(f"{source}: {exc}; keep train.optimizer as it was, or use --init-from "
                               "to start a new run from its weights") from None
        state = []
        for layer, cell in enumerate(self.model.cells):
            names = [f"state.{layer}.{n}" for n in cell.state_names]
            missing = [n for n in names if n not in arrays]
            if missing:
                raise CharRNNError(f"{source}: missing carried state {missing[0]!r}")
            for name, blank in zip(names, self.state[layer]):
                if arrays[name].shape != blank.shape or arrays[name].dtype.kind != "f":
                    raise CharRNNError(
                        f"{source}: carried state {name!r} is {arrays[name].dtype}"
                        f"{list(arrays[name].shape)}, expected floats {list(blank.shape)} "
                        "(train.batch_size x units); resume with the train.batch_size it was "
                        "saved with, or use --init-from to start a new run from its weights")
            state.append(tuple(np.array(arrays[n], dtype=self.model.dtype) for n in names))
        self.state = state
        try:
            restored = Progress(**meta["progress"])
            self.rng.bit_generator.state = meta["rng"]
        except (KeyError, TypeError, ValueError) as exc:
            raise CharRNNError(f"{source}: invalid training progress in meta ({exc})") from None
        # In place: the loop holds a reference to self.progress.
        self.progress.__dict__.update(dataclasses.asdict(restored))


# -- the loop -----------------------------------------------------------------------------------


def _prepare_run_dir(run_dir: Path, fresh: bool, overwrite: bool) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise CharRNNError(f"cannot write to the run directory {run_dir}: "
                           f"{exc.strerror or exc}; choose another with --out") from None
    remove_stale_temporaries(str(run_dir))  # left by a run killed while saving
    if fresh and not overwrite and (run_dir / "last.npz").exists():
        raise UsageError(f"{run_dir} already holds a run; continue it with --resume "
                         f"{run_dir / 'last.npz'}, write elsewhere with --out, or pass --overwrite")


def _saved_step(checkpoint: Path) -> float:
    """The step a checkpoint was saved at; inf when the file cannot tell."""
    try:
        step = load_checkpoint(checkpoint)[1]["progress"]["step"]
    except (CharRNNError, KeyError, TypeError):
        return math.inf
    return step if isinstance(step, int) else math.inf


def _continue_history(checkpoint: Path, run_dir: Path, progress: Progress, in_place: bool) -> None:
    """On resume, keep the history up to the checkpoint in run_dir; what was logged after it will
    happen again. A rollback is placed by its count (its step is the one it undid, which a stop
    while retaking steps can precede), everything else by its step. Resumed elsewhere, run_dir
    also gets the checkpoint as last.npz and, when it is not from a later step, best.npz."""
    def before(record: dict) -> bool:
        if record.get("event") == "rollback":
            return record.get("rollbacks", 0) <= progress.rollbacks
        return record.get("step", 0) <= progress.step

    metrics.copy(checkpoint.parent / "metrics.jsonl", run_dir / "metrics.jsonl", before)
    if in_place:
        return
    copies = [(checkpoint, run_dir / "last.npz")]
    best = checkpoint.parent / "best.npz"
    if best.exists() and _saved_step(best) <= progress.step:
        copies.append((best, run_dir / "best.npz"))
    for source, target in copies:
        with open(source, "rb") as original:
            replace_file(target, lambda fh: shutil.copyfileobj(original, fh))


def _save(path: Path, capture: tuple[dict, dict]) -> None:
    """save_checkpoint, plus the way forward in the message when the disk refuses the file."""
    try:
        save_checkpoint(str(path), *capture)
    except CharRNNError as exc:
        last = path.parent / "last.npz"
        then = f"; once fixed, continue with: charrnn train --resume {last}" if last.exists() else ""
        raise CharRNNError(f"{exc}{then}") from None


def _total_steps(t, windows_per_epoch: int) -> int | None:
    limits = [n for n in (t.max_steps, t.max_epochs and t.max_epochs * windows_per_epoch) if n]
    return min(limits) if limits else None


def _check_schedule_fits(t, windows_per_epoch: int) -> None:
    """UsageError unless a cosine decay has steps left after its warm-up."""
    total = _total_steps(t, windows_per_epoch)
    if t.schedule == "cosine" and total is not None and total <= t.warmup_steps:
        limits = " and ".join(f"train.{key} {getattr(t, key)}" for key in ("max_steps", "max_epochs")
                              if getattr(t, key) is not None)
        raise UsageError(f"train.warmup_steps ({t.warmup_steps}) must be fewer than the {total} steps "
                         f"of the run ({limits}, {windows_per_epoch} windows per epoch), "
                         "or the cosine decay has no steps left")


def train(cfg: Config, *, out_dir: str | None = None, resume: str | None = None,
          init_from: str | None = None, overrides: tuple[str, ...] = (), overwrite: bool = False,
          show_progress: bool = True, say: Callable[[str], None] = print) -> Outcome:
    """Train as `cfg` says (or continue the run in `resume`, applying `overrides` to its config).

    Writes run_dir/config.yaml, metrics.jsonl, last.npz, best.npz and samples.txt, where
    run_dir is out_dir, else the directory of `resume`, else cfg.out_dir/cfg.name.
    Raises UsageError/CharRNNError with a one-line message on bad input or a hopeless divergence.
    """
    if resume and init_from:
        raise UsageError("--resume and --init-from exclude each other: --resume continues a run, "
                         "--init-from starts a new one from its weights")
    ckpt = None
    if resume:
        arrays, meta = load_checkpoint(resume)
        if not isinstance(meta.get("config"), dict):
            raise CharRNNError(f"{resume}: holds no training config, so it cannot be resumed")
        cfg = load_config(resume, overrides, base=meta["config"])
        ckpt = (arrays, meta, resume)
    elif init_from:
        arrays, meta = load_checkpoint(init_from)
        ckpt = (arrays, meta, init_from)

    bars = _LoadingBars(show_progress)
    try:
        loaded = load_corpus(cfg, bars, warn=say)
    finally:
        bars.close()
    vocab, train_ids, val_ids, note = loaded.vocab, loaded.train_ids, loaded.val_ids, loaded.note
    _check_trainable(cfg, train_ids)
    t = cfg.train
    stream = BatchStream(train_ids, t.batch_size, t.seq_len)
    model, dropout_rng = initial_model(cfg, train_ids, len(vocab), loaded.train_counts)
    if ckpt:
        arrays, meta, source = ckpt
        flag = "--resume" if resume else "--init-from"
        old_model, old_vocab = model_from_checkpoint(arrays, meta, source)
        if old_vocab != vocab:
            lost = sorted(set(old_vocab.chars) ^ set(vocab.chars))[:10]
            raise CharRNNError(f"{flag} {source}: its vocabulary ({len(old_vocab)} characters) differs "
                               f"from the corpus ({len(vocab)}); differing: {''.join(lost)!r}")
        if old_model.config() != model.config():
            saved = old_model.config()
            diff = ", ".join(f"{key} {value!r} (checkpoint: {saved[key]!r})"
                             for key, value in model.config().items() if saved[key] != value)
            raise CharRNNError(f"{flag} {source}: the config's model differs from the checkpoint's: "
                               f"{diff}; keep the model section as it was")
        for key, value in old_model.params.items():
            model.params[key][...] = value
    optimizer = make_optimizer(t.optimizer, model.params, **_optimizer_args(t))
    run = _Run(cfg, model, vocab, optimizer, dropout_rng)
    if resume:
        run.restore(*ckpt)
        if run.progress.cursor >= stream.windows_per_epoch:
            raise CharRNNError(f"--resume {resume}: it stopped at window {run.progress.cursor} of an "
                               f"epoch, but the text now gives {stream.windows_per_epoch} windows per "
                               "epoch; keep the data and train.seq_len as they were, or use --init-from")

    _check_schedule_fits(t, stream.windows_per_epoch)

    # Before anything is written: a run whose workers cannot start leaves no trace.
    workers = _start_workers(model, t.processes)
    with workers or contextlib.nullcontext():
        run_dir = (Path(out_dir) if out_dir
                   else Path(resume).parent if resume else Path(cfg.out_dir) / cfg.name)
        # --resume with --out elsewhere continues the run in a new directory: one that must not
        # already hold another run, and that starts with the checkpoints and history so far.
        in_place = bool(resume) and run_dir.resolve() == Path(resume).resolve().parent
        _prepare_run_dir(run_dir, fresh=not in_place, overwrite=overwrite)
        if not in_place:
            # A replaced run's files go now, not at the first evaluation: a crash before it must not
            # leave the old run's checkpoints looking like this one's.
            for name in ("metrics.jsonl", "samples.txt", "last.npz", "best.npz"):
                (run_dir / name).unlink(missing_ok=True)
        if resume:
            _continue_history(Path(resume), run_dir, run.progress, in_place)
        dump_config(cfg, str(run_dir / "config.yaml"))

        if note:
            say(note)
        optimizer_bytes = sum(v.nbytes for v in optimizer.state_dict().values())
        memory = memory_estimate(model, optimizer_bytes, t.batch_size, t.seq_len)
        say(f"{model.cell_type} {model.num_layers}x{model.hidden_size}, vocabulary {len(vocab)}, "
            f"{model.num_params():,} parameters, ~{memory / 2**20:.0f} MiB for training; "
            f"{len(train_ids):,} training / {len(val_ids):,} validation characters, "
            f"{stream.windows_per_epoch} windows per epoch"
            + (f"; rows split between {t.processes} processes" if t.processes > 1 else ""))
        if resume:
            say(f"resuming {resume} at step {run.progress.step}, epoch {run.progress.epoch}")

        return _loop(run, stream, val_ids, run_dir, show_progress, say, workers)


def _start_workers(model: CharRNN, processes: int) -> SplitBatch | None:
    """The worker processes of train.processes (None for 1), or a one-line CharRNNError."""
    if processes == 1:
        return None
    try:
        return SplitBatch(model, processes)
    except OSError as exc:
        raise CharRNNError(f"train.processes {processes}: cannot start the worker processes "
                           f"({exc}); use --set train.processes=1") from None


def _loop(run: _Run, stream: BatchStream, val_ids: np.ndarray, run_dir: Path, show_progress: bool,
          say: Callable[[str], None], workers: SplitBatch | None) -> Outcome:
    cfg, model, optimizer, p = run.cfg, run.model, run.optimizer, run.progress
    t = cfg.train
    total = _total_steps(t, stream.windows_per_epoch)
    metrics_path = run_dir / "metrics.jsonl"
    chars_per_step = t.batch_size * t.seq_len
    good = run.capture()  # what a divergence rolls back to
    # ln V is the loss of a uniform guess; a loss far above it is divergence even while the
    # running average is too young to judge (or was itself swept up by a blow-up at the start).
    ceiling = t.divergence_factor * max(math.log(model.vocab_size), 1.0)
    bar = tqdm(total=total, initial=p.step, disable=not show_progress, unit="step",
               dynamic_ncols=True, file=sys.stderr, leave=True)
    out = (lambda msg: bar.write(msg, file=sys.stderr)) if show_progress else say
    shown = {"loss": math.nan, "chars_per_s": 0.0}  # the bar's figures from the last log line

    def show() -> None:
        val = math.nan if run.last_val is None else run.last_val
        bar.set_postfix_str(f"ep {p.epoch} loss {shown['loss']:.3f} val {val:.3f} "
                            f"bpc {bits_per_char(shown['loss']):.2f} {shown['chars_per_s']:,.0f} c/s",
                            refresh=False)

    # train.eval_chars: the periodic evaluations (and best.npz) judge a fixed head of the
    # validation text, so that an evaluation costs no more than the steps between two.
    periodic_val = val_ids[: t.eval_chars] if t.eval_chars else val_ids

    def save_and_evaluate():
        nonlocal good
        run.last_val = evaluate(model, periodic_val, t.batch_size, t.seq_len)
        improved = run.last_val < p.best_val
        p.best_val = min(p.best_val, run.last_val)
        good = run.capture()
        _save(run_dir / "last.npz", good)
        if improved:
            _save(run_dir / "best.npz", good)
        metrics.append(metrics_path, {"event": "eval", "step": p.step, "epoch": p.epoch,
                                     "val_loss": run.last_val, "val_bpc": bits_per_char(run.last_val),
                                     "best_val_loss": p.best_val, "elapsed": round(p.elapsed, 3)})
        line = (f"step {p.step} epoch {p.epoch}: val loss {run.last_val:.4f} nats "
                f"({bits_per_char(run.last_val):.3f} bpc){' *best*' if improved else ''}")
        if t.sample_length:
            rng = np.random.default_rng([t.seed, p.step])
            text = "".join(generate(model, run.vocab, rng, length=t.sample_length,
                                    temperature=_SAMPLE_TEMPERATURE))
            metrics.append_text(run_dir / "samples.txt",
                         f"=== step {p.step}, val loss {run.last_val:.4f} ===\n{text}\n\n")
            line += "\n" + text.strip("\n")[:200]
        out(line)
        show()

    def rollback(loss: float, norm: float) -> None:
        p_lost = p.step
        seen = {"loss": loss if math.isfinite(loss) else str(loss),
                "grad_norm": norm if math.isfinite(norm) else str(norm)}
        if p.rollbacks >= t.max_rollbacks:
            metrics.append(metrics_path, {"event": "diverged", "step": p_lost, **seen,
                                         "rollbacks": p.rollbacks})
            last = run_dir / "last.npz"
            saved = f"{last} holds the last good state; " if last.exists() else ""
            raise CharRNNError(
                f"training diverged {p.rollbacks + 1} time{'s' if p.rollbacks else ''} (last at step "
                f"{p_lost}, loss {loss:.4g}); "
                f"{saved}lower train.learning_rate (now {t.learning_rate:g}) or tighten "
                f"train.grad_clip (now {t.grad_clip:g})")
        kept = (p.rollbacks + 1, p.lr_scale * t.rollback_lr_factor, p.elapsed)
        run.restore(*good, source="the last good state")
        p.rollbacks, p.lr_scale, p.elapsed = kept
        p.loss_avg, p.avg_steps = None, 0
        # the undone steps' records go: those steps are taken (and logged) again
        metrics.copy(metrics_path, metrics_path, lambda r: r.get("event") != "train" or r["step"] <= p.step)
        metrics.append(metrics_path, {"event": "rollback", "step": p_lost, "to_step": p.step, **seen,
                                     "lr_scale": p.lr_scale, "rollbacks": p.rollbacks})
        out(f"step {p_lost}: loss {loss:.4g}, grad norm {norm:.4g} - diverging; rolled back to step "
            f"{p.step}, learning rate x{p.lr_scale:g} (rollback {p.rollbacks} of {t.max_rollbacks})")

    def finished() -> bool:
        return ((t.max_steps is not None and p.step >= t.max_steps)
                or (t.max_epochs is not None and p.epoch >= t.max_epochs)
                or (t.max_time is not None and p.elapsed >= t.max_time))

    window_losses, window_norms, window_time = [], [], 0.0
    evaluated_at = p.step if p.step else None
    window_step = model.loss_and_grads
    if workers is not None:
        workers.notify = out
        window_step = workers.loss_and_grads
    with stop_signals() as signals:
        while not finished() and signals.received is None:
            began = time.perf_counter()
            if p.cursor == 0:
                run.state = model.init_state(t.batch_size)  # a new epoch starts from a blank state
            x, y = stream.window(p.cursor)
            loss, grads, new_state = window_step(x, y, run.state, run.rng)
            if t.grad_clip > 0:
                clip = clip_grad_norm if t.clip_mode == "norm" else clip_grad_value
                norm = clip(grads, t.grad_clip)
            else:
                norm = math.sqrt(sum(float(np.vdot(g, g)) for g in grads.values()))
            spike = loss > ceiling or (p.avg_steps >= _AVG_WARMUP
                                       and loss > t.divergence_factor * p.loss_avg)
            if not (math.isfinite(loss) and math.isfinite(norm)) or spike:
                p.elapsed += time.perf_counter() - began
                rollback(loss, norm)
                window_losses, window_norms, window_time = [], [], 0.0  # figures of undone steps
                bar.n = p.step
                continue
            lr = p.lr_scale * learning_rate(p.step, t.learning_rate, t.schedule, t.warmup_steps,
                                            total, t.decay_rate, t.decay_every, t.min_lr)
            optimizer.step(model.params, grads, lr)
            run.state = new_state
            p.step += 1
            p.cursor += 1
            if p.cursor == stream.windows_per_epoch:
                p.cursor, p.epoch = 0, p.epoch + 1
            p.loss_avg = loss if p.loss_avg is None else _AVG_DECAY * p.loss_avg + (1 - _AVG_DECAY) * loss
            p.avg_steps += 1
            spent = time.perf_counter() - began
            p.elapsed += spent
            window_losses.append(loss)
            window_norms.append(norm)
            window_time += spent
            if p.step % t.log_every == 0:
                shown["loss"] = float(np.mean(window_losses))
                shown["chars_per_s"] = len(window_losses) * chars_per_step / window_time
                metrics.append(metrics_path, {
                    "event": "train", "step": p.step, "epoch": p.epoch, "loss": shown["loss"],
                    "bpc": bits_per_char(shown["loss"]), "grad_norm": float(np.mean(window_norms)),
                    "lr": lr, "chars_per_s": round(shown["chars_per_s"]), "elapsed": round(p.elapsed, 3)})
                show()
                window_losses, window_norms, window_time = [], [], 0.0
            bar.update(1)
            if p.step % t.eval_every == 0:
                save_and_evaluate()
                evaluated_at = p.step
        # A signal that came while the last step was being saved stops nothing: the run is done.
        stopped = signals.received if not finished() else None
        if stopped is not None:
            # Save now without evaluating: the user is waiting.
            _save(run_dir / "last.npz", run.capture())
        elif evaluated_at != p.step:
            save_and_evaluate()
        if stopped is None and len(periodic_val) < len(val_ids):
            full = evaluate(model, val_ids, t.batch_size, t.seq_len)
            metrics.append(metrics_path, {"event": "final", "step": p.step, "val_loss": full,
                                         "val_bpc": bits_per_char(full), "val_chars": len(val_ids)})
            out(f"step {p.step}: val loss {full:.4f} nats ({bits_per_char(full):.3f} bpc) on the whole "
                f"validation text ({len(val_ids):,} characters; train.eval_chars {t.eval_chars:,})")
    bar.close()
    if stopped is not None:
        say(f"stopped by {signal.Signals(stopped).name} at step {p.step}; "
            f"continue with: charrnn train --resume {run_dir / 'last.npz'}")
    return Outcome(run_dir, p, stopped)
