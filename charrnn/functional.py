"""Pure array math shared by the cells, the model and the samplers.

No state, no I/O: every function takes arrays and returns arrays.
"""

from __future__ import annotations

import numpy as np


# Rows of logits are processed in blocks of about this many elements (1 MB of float32), so the
# five passes of a softmax run in cache instead of streaming a (N, V) array from memory each.
_BLOCK_ELEMENTS = 1 << 18


def softmax_cross_entropy_(logits: np.ndarray, targets: np.ndarray, bias: np.ndarray | None = None,
                           grad_scale: float | None = None) -> np.ndarray:
    """Fused softmax + cross-entropy, in place.

    logits: (N, V) float, overwritten with the softmax probabilities, or, with grad_scale, with
        grad_scale * (probabilities - one_hot(targets)): the gradient of grad_scale * nll.sum().
    targets: (N,) int.
    bias: optional (V,) added to every row first (fused here rather than a pass of its own).
    Returns the negative log-likelihood of each row, (N,) in nats (same dtype as logits).

    The NLL is log(sum exp z) - z_target on max-shifted logits, so a target with a tiny
    probability gives a large finite loss instead of log(0).
    """
    N, V = logits.shape
    nll = np.empty(N, dtype=logits.dtype)
    step = max(1, _BLOCK_ELEMENTS // V)
    rows = np.arange(min(step, N))
    for start in range(0, N, step):
        z = logits[start : start + step]
        t = targets[start : start + step]
        r = rows[: len(z)]
        if bias is not None:
            z += bias
        top = z.max(axis=1, keepdims=True)
        z -= top
        target_logit = z[r, t]
        np.exp(z, out=z)
        total = z.sum(axis=1, keepdims=True)
        np.log(total[:, 0], out=nll[start : start + step])
        nll[start : start + step] -= target_logit
        # One division per row, then a product per element instead of a division.
        np.divide(1.0 if grad_scale is None else grad_scale, total, out=total)
        z *= total
        if grad_scale is not None:
            z[r, t] -= grad_scale
    return nll


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
