"""The training loop, as a straight narrative, and the only module that shows a progress bar.

    text -> vocab -> ids -> train / val split -> stream windows (B, T)
    loop: window -> loss, grads (state carried) -> clip -> optimizer step -> log
          every eval_every: val loss -> last.npz, best.npz, a sample
    stop: max_steps, max_epochs or max_time, whichever comes first; or a signal (state saved)
          (max_steps auto: the steps max_time allows, timed over the first ones)

What the run starts from is decided in start.py, its resumable state lives in run_state.py and
its files in run_dir.py; this module puts them together and runs the steps.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from . import metrics, run_dir as run_files
from .checkpoint import load_checkpoint
from .config import HORIZON_PILOT, Config, dump_config, load_config
from .corpus import BatchStream
from .encoded import load_corpus
from .errors import CharRNNError
from .evaluate import bits_per_char, evaluate
from .interrupts import stop_signals
from .optim import clip_grad_norm, clip_grad_value, learning_rate
from .parallel import SplitBatch
from .run_state import Progress, RunState
from .sample import generate
from .start import (check_schedule_fits, check_trainable, initial_model, memory_estimate,
                    optimizer_for, step_limit, take_weights, total_steps, worker_processes)

# A loss spike is judged against this exponential moving average of the training loss, once
# it has seen enough steps to mean something.
_AVG_DECAY = 0.95
_AVG_WARMUP = 20
_SAMPLE_TEMPERATURE = 0.8
_BAR_BYTES = 32 << 20  # loading stages shorter than this get no progress bar


@dataclasses.dataclass
class Outcome:
    run_dir: Path
    progress: Progress
    signal: int | None = None   # set when a signal stopped the run (after saving last.npz)


Say = Callable[[str], None]


def train(cfg: Config, *, out_dir: str | None = None, init_from: str | None = None,
          overwrite: bool = False, show_progress: bool = True, say: Say = print) -> Outcome:
    """Train a new run as cfg says, from fresh weights or those of the checkpoint init_from.

    Writes run_dir/config.yaml, metrics.jsonl, last.npz, best.npz and samples.txt, where
    run_dir is out_dir, else cfg.out_dir/cfg.name. Raises UsageError/CharRNNError with a
    one-line message on bad input or a hopeless divergence.
    """
    weights = (*load_checkpoint(init_from), init_from) if init_from else None
    run_dir = Path(out_dir) if out_dir else Path(cfg.out_dir) / cfg.name
    return _session(cfg, run_dir, weights, None, overwrite, show_progress, say)


def resume(checkpoint: str, *, overrides: tuple[str, ...] = (), out_dir: str | None = None,
           overwrite: bool = False, show_progress: bool = True, say: Say = print) -> Outcome:
    """Continue the run saved in checkpoint exactly, with its config and these --set overrides,
    in its own directory or in out_dir (which then starts with the history so far)."""
    arrays, meta = load_checkpoint(checkpoint)
    if not isinstance(meta.get("config"), dict):
        raise CharRNNError(f"{checkpoint}: holds no training config, so it cannot be resumed")
    cfg = load_config(checkpoint, overrides, base=meta["config"])
    run_dir = Path(out_dir) if out_dir else Path(checkpoint).parent
    return _session(cfg, run_dir, (arrays, meta, checkpoint), checkpoint, overwrite, show_progress, say)


def _session(cfg: Config, run_dir: Path, weights: tuple | None, resumed: str | None,
             overwrite: bool, show_progress: bool, say: Say) -> Outcome:
    """Everything is checked before the first file is written: a run that cannot start leaves
    no trace. weights: (arrays, meta, path) of the checkpoint to start from, or None."""
    t = cfg.train
    bars = _LoadingBars(show_progress)
    try:
        loaded = load_corpus(cfg, bars, warn=say)
    finally:
        bars.close()
    check_trainable(cfg, loaded.train_ids)
    stream = BatchStream(loaded.train_ids, t.batch_size, t.seq_len)
    model, dropout_rng = initial_model(cfg, loaded.train_ids, len(loaded.vocab), loaded.train_counts)
    if weights:
        take_weights(model, loaded.vocab, *weights, flag="--resume" if resumed else "--init-from")
    run = RunState(cfg, model, loaded.vocab, optimizer_for(cfg, model), dropout_rng)
    if resumed:
        run.restore(*weights)
        if run.progress.cursor >= stream.windows_per_epoch:
            raise CharRNNError(f"--resume {resumed}: it stopped at window {run.progress.cursor} of an "
                               f"epoch, but the text now gives {stream.windows_per_epoch} windows per "
                               "epoch; keep the data and train.seq_len as they were, or use --init-from")
    check_schedule_fits(t, stream.windows_per_epoch)

    processes, why = worker_processes(cfg)
    workers = _start_workers(run, processes)
    with workers or contextlib.nullcontext():
        # --resume with --out elsewhere continues the run in a new directory: one that must not
        # already hold another run, and that starts with the checkpoints and history so far.
        in_place = bool(resumed) and run_dir.resolve() == Path(resumed).resolve().parent
        run_files.prepare(run_dir, fresh=not in_place, overwrite=overwrite)
        if resumed:
            run_files.continue_history(Path(resumed), run_dir, run.progress, in_place)
        dump_config(cfg, str(run_dir / "config.yaml"))
        if loaded.note:
            say(loaded.note)
        say(_summary(run, stream, loaded) + f"; {why}")
        if resumed:
            say(f"resuming {resumed} at step {run.progress.step}, epoch {run.progress.epoch}")
        return _Loop(run, stream, loaded.val_ids, run_dir, show_progress, say, workers).run_until_stopped()


def _start_workers(run: RunState, processes: int) -> SplitBatch | None:
    """The worker processes that share the rows (None for 1), or a one-line CharRNNError."""
    if processes == 1:
        return None
    try:
        return SplitBatch(run.model, processes)
    except OSError as exc:
        raise CharRNNError(f"train.processes {processes}: cannot start the worker processes "
                           f"({exc}); use --set train.processes=1") from None


def _summary(run: RunState, stream: BatchStream, loaded) -> str:
    model, t = run.model, run.cfg.train
    optimizer_bytes = sum(v.nbytes for v in run.optimizer.state_dict().values())
    memory = memory_estimate(model, optimizer_bytes, t.batch_size, t.seq_len)
    return (f"{model.spec.cell} {model.num_layers}x{model.hidden_size}, vocabulary {len(loaded.vocab)}, "
            f"{model.num_params():,} parameters, ~{memory / 2**20:.0f} MiB for training; "
            f"{len(loaded.train_ids):,} training / {len(loaded.val_ids):,} validation characters, "
            f"{stream.windows_per_epoch} windows per epoch")


# -- the loop -----------------------------------------------------------------------------------


class _Loop:
    """One session of training steps over a prepared run; run_until_stopped() is the whole story."""

    def __init__(self, run: RunState, stream: BatchStream, val_ids: np.ndarray, run_dir: Path,
                 show_progress: bool, say: Say, workers: SplitBatch | None):
        self.run, self.stream, self.val_ids, self.run_dir = run, stream, val_ids, run_dir
        self.p, self.t = run.progress, run.cfg.train
        self.total = total_steps(self.t, stream.windows_per_epoch, self.p.horizon)
        self.metrics_path = run_dir / "metrics.jsonl"
        # train.eval_chars: the periodic evaluations (and best.npz) judge a fixed head of the
        # validation text, so that an evaluation costs no more than the steps between two.
        self.periodic_val = val_ids[: self.t.eval_chars] if self.t.eval_chars else val_ids
        self.good = run.capture()  # what a divergence rolls back to
        # ln V is the loss of a uniform guess: a loss far above it is divergence even while the
        # running average is too young to judge (or was itself swept up by a blow-up at the start).
        self.ceiling = self.t.divergence_factor * max(math.log(run.model.vocab_size), 1.0)
        self.evaluated_at = self.p.step if self.p.step else None
        self.window = _LogWindow()
        self.shown_loss, self.shown_rate = math.nan, 0.0  # the bar's figures from the last log line
        self.bar = tqdm(total=self.total, initial=self.p.step, disable=not show_progress, unit="step",
                        dynamic_ncols=True, file=sys.stderr, leave=True)
        self.say = say
        self.out = (lambda msg: self.bar.write(msg, file=sys.stderr)) if show_progress else say
        self.window_step = run.model.loss_and_grads
        if workers is not None:
            workers.notify = self.out
            self.window_step = workers.loss_and_grads

    def run_until_stopped(self) -> Outcome:
        p = self.p
        with stop_signals() as signals:
            while not self.finished() and signals.received is None:
                self.train_one_window()
            # A signal that came while the last step was being saved stops nothing: the run is done.
            stopped = signals.received if not self.finished() else None
            if stopped is not None:
                run_files.save(self.run_dir / "last.npz", self.run.capture())  # the user is waiting
            else:
                if self.evaluated_at != p.step:
                    self.evaluate_and_save()
                if len(self.periodic_val) < len(self.val_ids):
                    self.evaluate_the_whole_validation_text()
        self.bar.close()
        if stopped is not None:
            self.say(f"stopped by {signal.Signals(stopped).name} at step {p.step}; "
                     f"continue with: charrnn train --resume {self.run_dir / 'last.npz'}")
        return Outcome(self.run_dir, p, stopped)

    def finished(self) -> bool:
        p, t = self.p, self.t
        steps = step_limit(t, p.horizon)
        return ((steps is not None and p.step >= steps)
                or (t.max_epochs is not None and p.epoch >= t.max_epochs)
                or (t.max_time is not None and p.elapsed >= t.max_time))

    def train_one_window(self) -> None:
        run, p, t = self.run, self.p, self.t
        began = time.perf_counter()
        if p.cursor == 0:
            run.state = run.model.init_state(t.batch_size)  # a new epoch starts from a blank state
        x, y = self.stream.window(p.cursor)
        loss, grads, new_state = self.window_step(x, y, run.state, run.rng)
        norm = self.clip(grads)
        if self.diverging(loss, norm):
            p.elapsed += time.perf_counter() - began
            self.roll_back(loss, norm)
            return
        # Until max_steps auto knows its horizon the run is in warm-up, which ignores the total.
        lr = p.lr_scale * learning_rate(p.step, t.learning_rate, t.schedule, t.warmup_steps,
                                        self.total or t.warmup_steps + 1, t.decay_rate,
                                        t.decay_every, t.min_lr)
        run.optimizer.step(run.model.params, grads, lr)
        run.state = new_state
        self.advance(loss)
        spent = time.perf_counter() - began
        p.elapsed += spent
        self.window.add(loss, norm, spent)
        if t.max_steps == "auto" and p.horizon is None and p.step in HORIZON_PILOT:
            self.time_the_pilot(spent)
        if p.step % t.log_every == 0:
            self.log(lr)
        self.bar.update(1)
        if p.step % t.eval_every == 0:
            self.evaluate_and_save()

    def time_the_pilot(self, spent: float) -> None:
        """train.max_steps auto: add a pilot step's time; after the last, fix the horizon at the
        steps the rest of max_time allows at the pilot's mean speed (stored in every checkpoint
        from then on, so that a resumed run keeps the schedule it started)."""
        p, t = self.p, self.t
        p.pilot_seconds += spent
        if p.step != HORIZON_PILOT[-1]:
            return
        per_step = p.pilot_seconds / len(HORIZON_PILOT)
        p.horizon = max(p.step + int((t.max_time - p.elapsed) / per_step), t.warmup_steps + 1)
        self.total = total_steps(t, self.stream.windows_per_epoch, p.horizon)
        self.bar.total = self.total
        metrics.append(self.metrics_path, {"event": "horizon", "step": p.step, "horizon": p.horizon,
                                           "seconds_per_step": per_step, "max_time": t.max_time})
        self.out(f"step {p.step}: {per_step:.3f} s per step over steps {HORIZON_PILOT[0]}-{p.step}: "
                 f"the schedule runs to step {p.horizon:,} in train.max_time {t.max_time:g} s")

    def clip(self, grads: dict) -> float:
        """Clip grads in place as train.clip_mode says; the global L2 norm before clipping."""
        t = self.t
        if t.grad_clip > 0:
            clip = clip_grad_norm if t.clip_mode == "norm" else clip_grad_value
            return clip(grads, t.grad_clip)
        return math.sqrt(sum(float(np.vdot(g, g)) for g in grads.values()))

    def diverging(self, loss: float, norm: float) -> bool:
        """A non-finite loss or norm, or a spike: the loss far above its running average or
        above the ceiling."""
        p, t = self.p, self.t
        spike = loss > self.ceiling or (p.avg_steps >= _AVG_WARMUP and loss > t.divergence_factor * p.loss_avg)
        return not (math.isfinite(loss) and math.isfinite(norm)) or spike

    def advance(self, loss: float) -> None:
        """The bookkeeping of a step taken: counters, the window cursor, the running average."""
        p = self.p
        p.step += 1
        p.cursor += 1
        if p.cursor == self.stream.windows_per_epoch:
            p.cursor, p.epoch = 0, p.epoch + 1
        p.loss_avg = loss if p.loss_avg is None else _AVG_DECAY * p.loss_avg + (1 - _AVG_DECAY) * loss
        p.avg_steps += 1

    def log(self, lr: float) -> None:
        """A train record of the steps since the last one, and the bar's figures."""
        p, w = self.p, self.window
        self.shown_loss = w.mean_loss()
        self.shown_rate = w.steps() * self.t.batch_size * self.t.seq_len / w.seconds
        metrics.append(self.metrics_path, {
            "event": "train", "step": p.step, "epoch": p.epoch, "loss": self.shown_loss,
            "bpc": bits_per_char(self.shown_loss), "grad_norm": w.mean_norm(),
            "lr": lr, "chars_per_s": round(self.shown_rate), "elapsed": round(p.elapsed, 3)})
        self.show()
        self.window = _LogWindow()

    def show(self) -> None:
        val = math.nan if self.run.last_val is None else self.run.last_val
        self.bar.set_postfix_str(f"ep {self.p.epoch} loss {self.shown_loss:.3f} val {val:.3f} "
                                 f"bpc {bits_per_char(self.shown_loss):.2f} {self.shown_rate:,.0f} c/s",
                                 refresh=False)

    def evaluate_and_save(self) -> None:
        """Validation loss, last.npz (and best.npz when it improved), an eval record, a sample."""
        run, p, t = self.run, self.p, self.t
        run.last_val = evaluate(run.model, self.periodic_val, t.batch_size, t.seq_len)
        improved = run.last_val < p.best_val
        p.best_val = min(p.best_val, run.last_val)
        self.good = run.capture()
        run_files.save(self.run_dir / "last.npz", self.good)
        if improved:
            run_files.save(self.run_dir / "best.npz", self.good)
        self.evaluated_at = p.step
        metrics.append(self.metrics_path, {
            "event": "eval", "step": p.step, "epoch": p.epoch, "val_loss": run.last_val,
            "val_bpc": bits_per_char(run.last_val), "best_val_loss": p.best_val,
            "elapsed": round(p.elapsed, 3)})
        line = (f"step {p.step} epoch {p.epoch}: val loss {run.last_val:.4f} nats "
                f"({bits_per_char(run.last_val):.3f} bpc){' *best*' if improved else ''}")
        if t.sample_length:
            text = self.sample()
            metrics.append_text(self.run_dir / "samples.txt",
                                f"=== step {p.step}, val loss {run.last_val:.4f} ===\n{text}\n\n")
            line += "\n" + text.strip("\n")[:200]
        self.out(line)
        self.show()

    def sample(self) -> str:
        """The evaluation's sample: its own generator per step, so the run's RNG is untouched."""
        rng = np.random.default_rng([self.t.seed, self.p.step])
        return "".join(generate(self.run.model, self.run.vocab, rng, length=self.t.sample_length,
                                temperature=_SAMPLE_TEMPERATURE))

    def evaluate_the_whole_validation_text(self) -> None:
        """With train.eval_chars, the run's last word is the loss over all of the validation text."""
        p, t = self.p, self.t
        full = evaluate(self.run.model, self.val_ids, t.batch_size, t.seq_len)
        metrics.append(self.metrics_path, {"event": "final", "step": p.step, "val_loss": full,
                                           "val_bpc": bits_per_char(full), "val_chars": len(self.val_ids)})
        self.out(f"step {p.step}: val loss {full:.4f} nats ({bits_per_char(full):.3f} bpc) on the whole "
                 f"validation text ({len(self.val_ids):,} characters; train.eval_chars {t.eval_chars:,})")

    def roll_back(self, loss: float, norm: float) -> None:
        """Back to the last saved state with a lower learning rate, or give up after
        train.max_rollbacks. The time spent on the undone steps stays spent."""
        run, p, t = self.run, self.p, self.t
        p_lost = p.step
        seen = {"loss": loss if math.isfinite(loss) else str(loss),
                "grad_norm": norm if math.isfinite(norm) else str(norm)}
        if p.rollbacks >= t.max_rollbacks:
            metrics.append(self.metrics_path, {"event": "diverged", "step": p_lost, **seen,
                                               "rollbacks": p.rollbacks})
            last = self.run_dir / "last.npz"
            saved = f"{last} holds the last good state; " if last.exists() else ""
            raise CharRNNError(
                f"training diverged {p.rollbacks + 1} time{'s' if p.rollbacks else ''} (last at step "
                f"{p_lost}, loss {loss:.4g}); "
                f"{saved}lower train.learning_rate (now {t.learning_rate:g}) or tighten "
                f"train.grad_clip (now {t.grad_clip:g})")
        kept = (p.rollbacks + 1, p.lr_scale * t.rollback_lr_factor, p.elapsed)
        run.restore(*self.good, source="the last good state")
        p.rollbacks, p.lr_scale, p.elapsed = kept
        p.loss_avg, p.avg_steps = None, 0
        # the undone steps' records go: those steps are taken (and logged) again
        metrics.copy(self.metrics_path, self.metrics_path,
                     lambda r: r.get("event") != "train" or r["step"] <= p.step)
        metrics.append(self.metrics_path, {"event": "rollback", "step": p_lost, "to_step": p.step, **seen,
                                           "lr_scale": p.lr_scale, "rollbacks": p.rollbacks})
        self.out(f"step {p_lost}: loss {loss:.4g}, grad norm {norm:.4g} - diverging; rolled back to step "
                 f"{p.step}, learning rate x{p.lr_scale:g} (rollback {p.rollbacks} of {t.max_rollbacks})")
        self.window = _LogWindow()  # the figures of undone steps
        self.bar.n = p.step


class _LogWindow:
    """The losses, gradient norms and seconds of the steps since the last train record."""

    def __init__(self):
        self.losses, self.norms, self.seconds = [], [], 0.0

    def add(self, loss: float, norm: float, seconds: float) -> None:
        self.losses.append(loss)
        self.norms.append(norm)
        self.seconds += seconds

    def steps(self) -> int:
        return len(self.losses)

    def mean_loss(self) -> float:
        return float(np.mean(self.losses))

    def mean_norm(self) -> float:
        return float(np.mean(self.norms))


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
