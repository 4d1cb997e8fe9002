"""Pure array math shared by the cells, the model and the samplers.

No state, no I/O: every function takes arrays and returns arrays.
"""

from __future__ import annotations

import numpy as np


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function, written through tanh so it never overflows: s(x) = 0.5 + 0.5 tanh(x/2)."""
    return 0.5 + 0.5 * np.tanh(0.5 * x)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, max-subtracted so large logits cannot overflow."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=-1, keepdims=True)
    return shifted


def one_hot(ids: np.ndarray, depth: int, dtype=np.float32) -> np.ndarray:
    """ids (...) int -> (..., depth) with a single 1 per row. The reference form of the input."""
    out = np.zeros(ids.shape + (depth,), dtype=dtype)
    np.put_along_axis(out, ids[..., None].astype(np.intp), 1, axis=-1)
    return out


def softmax_cross_entropy_(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Fused softmax + cross-entropy, in place.

    logits: (N, V) float, overwritten with the softmax probabilities.
    targets: (N,) int.
    Returns the negative log-likelihood of each row, (N,) in nats (same dtype as logits).

    The NLL is log(sum exp z) - z_target on max-shifted logits, so a target with a tiny
    probability gives a large finite loss instead of log(0).
    """
    rows = np.arange(logits.shape[0])
    logits -= logits.max(axis=1, keepdims=True)
    target_logit = logits[rows, targets]
    np.exp(logits, out=logits)
    total = logits.sum(axis=1, keepdims=True)
    logits /= total
    return np.log(total[:, 0]) - target_logit


def scatter_add_rows(ids: np.ndarray, rows: np.ndarray, num_rows: int) -> np.ndarray:
    """The gradient of a row gather: out[k] = sum of rows[n] over all n with ids[n] == k.

    ids: (N,) int; rows: (N, K) float. Returns (num_rows, K) in the dtype of rows.
    Equivalent to one_hot(ids, num_rows).T @ rows, but it only touches the ids present. After
    one sort, ids that occur once are copied in a single gather, and each id that occurs more
    often gets one sum over its rows: at most min(num_rows, N / 2) small calls. (np.add.at and
    np.add.reduceat over rows are several times slower.)
    """
    out = np.zeros((num_rows, rows.shape[1]), dtype=rows.dtype)
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
    counts = np.diff(np.r_[starts, ids.size])
    once = starts[counts == 1]
    out[sorted_ids[once]] = rows[order[once]]
    for start, count in zip(starts[counts > 1].tolist(), counts[counts > 1].tolist()):
        np.sum(rows[order[start : start + count]], axis=0, out=out[sorted_ids[start]])
    return out
