"""The fused softmax cross-entropy against a log-sum-exp reference, where overflow would show."""

import numpy as np
import pytest

from charrnn.functional import softmax_cross_entropy_


def _reference(logits: np.ndarray, targets: np.ndarray):
    """(nll (N,), probabilities (N, V)) by np.logaddexp, which never overflows."""
    log_total = np.logaddexp.reduce(logits, axis=1)
    return log_total - logits[np.arange(len(logits)), targets], np.exp(logits - log_total[:, None])


@pytest.mark.parametrize("scale", [1.0, 1e3, -1e3])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_softmax_cross_entropy_is_exact_for_huge_logits(scale, dtype):
    rng = np.random.default_rng(0)
    logits = (scale + rng.normal(scale=3.0, size=(7, 11))).astype(dtype)
    targets = rng.integers(0, 11, size=7)
    bias = rng.normal(size=11).astype(dtype)
    want_nll, want_p = _reference((logits + bias).astype(np.float64), targets)
    tol = 1e-12 if dtype == np.float64 else 1e-5

    probs = logits.copy()
    with np.errstate(all="raise"):
        nll = softmax_cross_entropy_(probs, targets, bias=bias)
    np.testing.assert_allclose(nll, want_nll, rtol=tol, atol=tol)
    np.testing.assert_allclose(probs, want_p, rtol=tol, atol=tol)

    grad = logits.copy()
    with np.errstate(all="raise"):
        softmax_cross_entropy_(grad, targets, bias=bias, grad_scale=0.5)
    want_p[np.arange(7), targets] -= 1.0
    np.testing.assert_allclose(grad, 0.5 * want_p, rtol=tol, atol=tol)


def test_rows_processed_block_by_block_each_use_their_own_targets():
    # V = 5,000 gives blocks of 52 rows: 200 rows make four blocks, the last one short.
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(200, 5000))
    targets = rng.integers(0, 5000, size=200)
    want_nll, want_p = _reference(logits, targets)
    grad = logits.copy()
    nll = softmax_cross_entropy_(grad, targets, grad_scale=1.0)
    np.testing.assert_allclose(nll, want_nll, rtol=1e-12)
    want_p[np.arange(200), targets] -= 1.0
    np.testing.assert_allclose(grad, want_p, rtol=1e-10, atol=1e-15)
