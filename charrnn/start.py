"""What a training run starts from, decided before anything is written: the model the config
describes (fresh, or with a checkpoint's weights), the optimizer, and the checks that refuse a
run which could not go far (a text shorter than one window, a schedule with no steps)."""

from __future__ import annotations

import dataclasses

import numpy as np

from .adaptive import default_cutoffs, frequency_order
from .checkpoint import model_from_checkpoint
from .config import Config
from .cores import available_cores
from .corpus import Vocab, id_counts
from .encoded import names
from .errors import CharRNNError, UsageError
from .model import CharRNN, ModelSpec
from .optim import hyperparameters, make_optimizer


def model_spec(cfg: Config, counts: np.ndarray) -> ModelSpec:
    """The architecture cfg describes, for a vocabulary with these character counts (V,) in the
    training text: the adaptive head ranks characters by them and places its default cutoffs."""
    chosen = dataclasses.asdict(cfg.model)  # the same keys as ModelSpec's (a test holds them so)
    if cfg.model.head == "adaptive":
        if chosen["head_cutoffs"] is None:
            chosen["head_cutoffs"] = default_cutoffs(counts)
        cutoffs = chosen["head_cutoffs"]
        if not cutoffs or cutoffs[-1] >= len(counts):
            raise UsageError(f"model.head_cutoffs {cutoffs} must lie below the vocabulary size "
                             f"{len(counts)}; choose smaller ranks or model.head: full")
        chosen["head_order"] = frequency_order(counts)
    return ModelSpec(vocab_size=len(counts), dtype=cfg.train.dtype, **chosen)


def initial_model(cfg: Config, train_ids: np.ndarray, vocab_size: int, counts: np.ndarray | None = None):
    """The model a run of cfg starts from, and the generator of its dropout masks.

    Both come from train.seed (two independent streams), so the same config draws the same
    initial weights and the same masks. The head's biases start at the training text's log
    unigram frequencies (CharRNN.set_unigram_biases). Returns (model, dropout_rng).
    """
    if counts is None:  # (V,) how often each id occurs in train_ids
        counts = id_counts(train_ids, vocab_size)
    model = CharRNN(model_spec(cfg, counts))
    init_rng, dropout_rng = (np.random.default_rng(s)
                             for s in np.random.SeedSequence(cfg.train.seed).spawn(2))
    model.init_params(init_rng)
    model.set_unigram_biases(counts)
    return model, dropout_rng


def take_weights(model: CharRNN, vocab: Vocab, arrays: dict, meta: dict, source: str, flag: str) -> None:
    """Copy a checkpoint's weights into model, which must be the same network over the same
    vocabulary; otherwise a CharRNNError that names what differs. flag: the option that named
    the checkpoint (--resume or --init-from), for the message."""
    saved, saved_vocab = model_from_checkpoint(arrays, meta, source)
    if saved_vocab != vocab:
        differing = sorted(set(saved_vocab.chars) ^ set(vocab.chars))[:10]
        raise CharRNNError(f"{flag} {source}: its vocabulary ({len(saved_vocab)} characters) differs "
                           f"from the corpus ({len(vocab)}); differing: {''.join(differing)!r}")
    if saved.spec != model.spec:
        was, now = dataclasses.asdict(saved.spec), dataclasses.asdict(model.spec)
        diff = ", ".join(f"{key} {value!r} (checkpoint: {was[key]!r})"
                         for key, value in now.items() if was[key] != value)
        raise CharRNNError(f"{flag} {source}: the config's model differs from the checkpoint's: "
                           f"{diff}; keep the model section as it was")
    for key, value in saved.params.items():
        model.params[key][...] = value


def optimizer_for(cfg: Config, model: CharRNN):
    """The optimizer train.optimizer names, with the train section's values of the
    hyperparameters it takes (each is a train key of the same name)."""
    t = cfg.train
    return make_optimizer(t.optimizer, model.params,
                          **{name: getattr(t, name) for name in hyperparameters(t.optimizer)})


# train.processes auto gives each worker at least this many rows x hidden units x layers. Below
# it a worker's elementwise calls are too small to gain from the second core: the pipes and
# the sum of the gradients cost more than it saves (side by side on an AMD EPYC Zen 5, B x H x L
# per worker of 2,048 ran at 0.88-0.94x one process, 4,096 at 1.03-1.38x, 8,192 at 1.19-1.24x).
MIN_WORK_PER_PROCESS = 4096


def worker_processes(cfg: Config, cores: int | None = None) -> tuple[int, str]:
    """(N, why): the processes that share each window's rows, and the reason for a chosen N.

    train.processes auto: as many as the cores this process may use (affinity and cgroup
    quota, see cores.py), but no more than leaves each MIN_WORK_PER_PROCESS; 1 on one core.
    The choice changes only speed and float rounding: the dropout masks do not depend on N."""
    t, m = cfg.train, cfg.model
    if t.processes != "auto":
        n = t.processes
        return n, f"train.processes {n}" + (f": rows split between {n} processes" if n > 1 else "")
    cores = available_cores() if cores is None else cores
    work = t.batch_size * m.hidden_size * m.num_layers
    n = max(1, min(cores, t.batch_size, work // MIN_WORK_PER_PROCESS))
    return n, ("train.processes auto: " + (f"rows split between {n} processes" if n > 1 else "1 process")
               + f" ({cores} core{'s' if cores > 1 else ''} available; batch {t.batch_size} x "
               f"{m.hidden_size} units x {m.num_layers} layer{'s' if m.num_layers > 1 else ''})")


def check_trainable(cfg: Config, train_ids: np.ndarray) -> None:
    """Refuse a training text too short for one (B, T) window."""
    t = cfg.train
    need = t.batch_size * t.seq_len + 1  # one more: the target of the last input
    if len(train_ids) < need:
        raise CharRNNError(f"{names(cfg.data.path)}: the training text has {len(train_ids):,} "
                           f"characters but train.batch_size {t.batch_size} x train.seq_len "
                           f"{t.seq_len} needs at least {need:,}; lower train.batch_size or "
                           "train.seq_len, or use more text")


def step_limit(t, horizon: int | None) -> int | None:
    """train.max_steps as a number: the timed horizon for auto (None until it is known)."""
    return horizon if t.max_steps == "auto" else t.max_steps


def total_steps(t, windows_per_epoch: int, horizon: int | None = None) -> int | None:
    """The steps the run will take by max_steps and max_epochs (None: only max_time stops it,
    or max_steps auto has not timed its horizon yet)."""
    if t.max_steps == "auto" and horizon is None:
        return None
    limits = [n for n in (step_limit(t, horizon), t.max_epochs and t.max_epochs * windows_per_epoch) if n]
    return min(limits) if limits else None


def check_schedule_fits(t, windows_per_epoch: int) -> None:
    """UsageError unless a cosine decay has steps left after its warm-up."""
    total = total_steps(t, windows_per_epoch)
    if t.schedule == "cosine" and total is not None and total <= t.warmup_steps:
        limits = " and ".join(f"train.{key} {getattr(t, key)}" for key in ("max_steps", "max_epochs")
                              if getattr(t, key) is not None)
        raise UsageError(f"train.warmup_steps ({t.warmup_steps}) must be fewer than the {total} steps "
                         f"of the run ({limits}, {windows_per_epoch} windows per epoch), "
                         "or the cosine decay has no steps left")


def memory_estimate(model: CharRNN, optimizer_bytes: int, batch_size: int, seq_len: int) -> int:
    """Rough peak bytes of a training step: parameters, gradients, optimizer slots, activations
    (about 16 floats per hidden unit and timestep in the cells, two logit buffers in the head)."""
    H, V, L = model.hidden_size, model.vocab_size, model.num_layers
    per_step_floats = batch_size * seq_len * (L * 16 * H + 2 * V)
    return optimizer_bytes + model.dtype.itemsize * (2 * model.num_params() + per_step_floats)
