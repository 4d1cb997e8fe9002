"""Loss over a whole text: what the trainer logs as val loss and what `charrnn eval` reports."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from .config import load_config
from .corpus import Vocab, eval_batches
from .encoded import load_corpus
from .errors import CharRNNError
from .model import CharRNN


def evaluate(model: CharRNN, ids: np.ndarray, batch_size: int, seq_len: int,
             progress: Callable[[int], None] | None = None) -> float:
    """Mean negative log-likelihood in nats per character of ids[1:] given what precedes it.

    ids: (N,) int. The text is cut into batch_size contiguous rows, each read from a zero state
    with the state carried across windows of seq_len, so every target counts exactly once and
    padding never does. No dropout. progress(1) is called after each window, if given.
    """
    total, count = 0.0, 0
    state = model.init_state(batch_size)
    for x, y, mask in eval_batches(ids, batch_size, seq_len):
        nll, state = model.nll(x, y, state)
        total += float(nll[mask].sum())
        count += int(mask.sum())
        if progress:
            progress(1)
    return total / count


def bits_per_char(nats: float) -> float:
    return nats / math.log(2)


def checkpoint_windows(checkpoint: str, meta: dict, batch_size: int | None,
                       seq_len: int | None) -> tuple[int, int]:
    """(B, T) for evaluating a checkpoint: the options given, else the train.batch_size and
    train.seq_len it was trained with (so its loss on its own validation text is the trainer's)."""
    saved = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    trained = saved.get("train") if isinstance(saved.get("train"), dict) else {}
    B = batch_size if batch_size is not None else trained.get("batch_size", 32)
    T = seq_len if seq_len is not None else trained.get("seq_len", 64)
    for option, value in (("--batch-size", B), ("--seq-len", T)):
        if not (isinstance(value, int) and 1 <= value <= 1_000_000):
            raise CharRNNError(f"{checkpoint}: its config's {option[2:].replace('-', '_')} is "
                               f"{value!r}, not a count of 1 to 1,000,000; pass {option}")
    return B, T


def validation_split(checkpoint: str, meta: dict, vocab: Vocab, warn) -> tuple[str, np.ndarray]:
    """(name, ids (N,)) of the validation text of the run that wrote the checkpoint, loaded as
    its config says; CharRNNError when that data no longer gives the checkpoint's vocabulary."""
    cfg = load_config(checkpoint, base=meta["config"])
    loaded = load_corpus(cfg, warn=warn)
    if loaded.vocab != vocab:
        raise CharRNNError(f"{checkpoint}: the training data changed since this checkpoint "
                           "(different vocabulary); evaluate a file instead of --val")
    return f"validation split of {cfg.data.val_path or cfg.data.path}", loaded.val_ids
