"""Turning a trained model's next-character logits into text.

`choose` draws one id per row from logits, with temperature, top-k, top-p (nucleus) and an optional
mask of allowed ids; it is the single place where randomness enters sampling, so every decoder
(plain text here, constrained poems elsewhere) shares its exactness guarantees.
"""

from __future__ import annotations

import operator

import numpy as np

from charrnn.errors import CharRNNError, UsageError


def check_sampling_options(temperature: float, top_k: int | None, top_p: float | None) -> None:
    """Raise UsageError, naming the command-line option, if a sampling option is out of range.

    temperature: a finite number >= 0; top_k: None or an integer >= 1; top_p: None or in (0, 1].
    """
    if not temperature >= 0:  # written this way so that NaN is rejected too
        raise UsageError("--temperature must be >= 0")
    if temperature == np.inf:
        raise UsageError("--temperature must be finite")
    if top_k is not None:
        try:
            k = operator.index(top_k)
        except TypeError:
            raise UsageError("--top-k must be an integer >= 1") from None
        if k < 1:
            raise UsageError("--top-k must be >= 1")
    if top_p is not None and not 0 < top_p <= 1:
        raise UsageError("--top-p must be in (0, 1]")


def choose(
    logits: np.ndarray,
    rng: np.random.Generator,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    allowed: np.ndarray | None = None,
) -> np.ndarray:
    """Draw one id per row from the distribution the logits define.

    logits: (B, V) float, any float dtype (the probabilities are computed in float64).
    rng: the only source of randomness; exactly one uniform is drawn per row, and none when
        temperature is 0.
    temperature: logits are divided by it; 0 means greedy (argmax, first one on ties).
    top_k: keep only the k largest logits of each row (entries tied with the k-th are kept too,
        so the result does not depend on an arbitrary tie order); k >= V changes nothing.
    top_p: after top-k, keep the smallest set of most probable ids whose probability reaches
        top_p (at least one id; ties with the least probable kept id are kept too).
    allowed: (V,) or (B, V) bool, False = forbidden. Forbidden ids are never returned; top-k and
        top-p then act among the allowed ids only.
    Returns ids (B,) int64.

    The draw is an exact categorical draw from the renormalised kept probabilities: one uniform
    u in [0, 1) per row against the normalised cumulative sum. An id of probability zero adds
    exactly nothing to the cumulative sum, so its interval is empty and it can never be drawn,
    whatever u is, and the last cumulative entry is exactly 1 > u, so the search never runs off
    the end.

    Raises UsageError for out-of-range options, ValueError for a malformed call (wrong shapes, a
    row with no allowed id), CharRNNError if the model produced NaN or infinite logits.
    """
    check_sampling_options(temperature, top_k, top_p)
    return _draw(logits, rng, temperature, top_k, top_p, allowed)


def _draw(logits, rng, temperature, top_k, top_p, allowed):
    """`choose` without the option checks, for callers that validated once up front."""
    z = np.array(logits, dtype=np.float64)  # a private copy: everything below works in place
    if z.ndim != 2:
        raise ValueError(f"logits must be 2-D (B, V), got shape {z.shape}")
    if allowed is not None:
        _apply_mask(z, allowed)
    top = z.max(axis=1, keepdims=True)
    if not np.isfinite(top).all():
        _raise_non_finite(top)
    if temperature == 0:
        return z.argmax(axis=1).astype(np.int64, copy=False)

    # Subtracting the row maximum first keeps exp() in range; dividing by a tiny temperature may
    # then overflow to -inf, which is the correct limit (probability 0), so that is not an error.
    z -= top
    if temperature != 1:
        with np.errstate(over="ignore"):
            z /= temperature
    vocab_size = z.shape[1]
    if top_k is not None and top_k < vocab_size:
        kth = np.partition(z, vocab_size - top_k, axis=1)[:, vocab_size - top_k, None]
        z[z < kth] = -np.inf
    np.exp(z, out=z)  # unnormalised probabilities; the largest is exactly 1
    if top_p is not None and top_p < 1:
        _keep_nucleus(z, top_p)

    np.cumsum(z, axis=1, out=z)
    z /= z[:, -1:]  # x / x == 1 exactly, so the last entry is 1 and u < 1 always finds an id
    u = rng.random((z.shape[0], 1))
    # The first id whose cumulative probability exceeds u = the number of entries <= u.
    return (z <= u).sum(axis=1, dtype=np.int64)


def _apply_mask(z: np.ndarray, allowed: np.ndarray) -> None:
    """Set the logits of forbidden ids to -inf in place; reject malformed masks."""
    allowed = np.asarray(allowed)
    if allowed.dtype != np.bool_:
        raise ValueError(f"allowed must be a bool mask, got dtype {allowed.dtype}")
    if allowed.shape not in (z.shape[1:], z.shape):
        raise ValueError(f"allowed has shape {allowed.shape}; expected {z.shape[1:]} or {z.shape}")
    if not allowed.any(axis=-1).all():
        raise ValueError("allowed forbids every id of some row; nothing can be chosen")
    np.copyto(z, -np.inf, where=~allowed)


def _raise_non_finite(top: np.ndarray) -> None:
    """Explain why some row's largest allowed logit is not a finite number."""
    if np.isnan(top).any() or (top == np.inf).any():
        raise CharRNNError(
            "the model produced NaN or infinite logits; the checkpoint is corrupt or its "
            "training diverged (retrain with a lower learning rate or stronger clipping)"
        )
    raise ValueError("every allowed id of some row has logit -inf; nothing can be chosen")


def _keep_nucleus(p: np.ndarray, top_p: float) -> None:
    """Zero, in place, every probability outside each row's top-p nucleus.

    p: (B, V) float64 unnormalised probabilities. An id is in the nucleus when the mass of the
    ids more probable than it is still below top_p of the total.
    """
    desc = -np.sort(-p, axis=1)
    before = np.zeros_like(desc)
    np.cumsum(desc[:, :-1], axis=1, out=before[:, 1:])
    total = before[:, -1:] + desc[:, -1:]
    kept = (before < top_p * total).sum(axis=1)  # >= 1: nothing precedes the most probable id
    smallest_kept = desc[np.arange(len(desc)), kept - 1, None]
    p[p < smallest_kept] = 0.0
