"""Loss over a whole text: what the trainer logs as val loss and what `charrnn eval` reports."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from .corpus import eval_batches
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
