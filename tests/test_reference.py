"""charrnn/reference.py, the cells written for reading: it passes a float64 gradient check of its
own, and the fast cells of charrnn/cells.py give its numbers, forward and every gradient."""

import numpy as np
import pytest

from charrnn import reference
from charrnn.cells import make_cell
from charrnn.gradcheck import numeric_grad, relative_error

# (cell, options): every cell and every option of one
CASES = [("lstm", {}), ("lstm", {"peephole": True}), ("gru", {}), ("rnn", {}),
         ("rnn", {"nonlinearity": "relu"})]
IDS = ["lstm", "lstm-peephole", "gru", "rnn-tanh", "rnn-relu"]
T, B, D, H = 5, 3, 4, 6


def _setup(kind, options, ids: bool, seed=0):
    rng = np.random.default_rng(seed)
    cell = make_cell(kind, D, H, **options)
    p = cell.init_params(rng, dtype=np.float64)
    for name in p:  # nonzero biases and peepholes, so that no term hides behind a zero
        p[name] = p[name] + rng.normal(scale=0.3, size=p[name].shape)
    x = rng.integers(0, D, size=(T, B)) if ids else rng.normal(size=(T, B, D))
    state = tuple(rng.normal(scale=0.5, size=(B, H)) for _ in cell.state_names)
    dhs = rng.normal(size=(T, B, H))
    dstate = tuple(rng.normal(size=(B, H)) for _ in cell.state_names)
    return cell, p, x, state, dhs, dstate


def _ref_options(options):
    return {k: v for k, v in options.items() if k in ("peephole", "nonlinearity")}


@pytest.mark.parametrize("ids", [False, True], ids=["float-input", "one-hot-ids"])
@pytest.mark.parametrize("kind, options", CASES, ids=IDS)
def test_fast_cells_equal_the_reference_forward_and_every_gradient(kind, options, ids):
    cell, p, x, state, dhs, dstate = _setup(kind, options, ids)
    hs, final, cache = cell.forward(p, x, state)
    ref_hs, ref_final, caches = reference.forward(kind, p, x, state, **_ref_options(options))
    np.testing.assert_allclose(hs, ref_hs, rtol=1e-12, atol=1e-13)
    for a, b in zip(final, ref_final):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)

    dx, dstate0, grads = cell.backward(p, dhs, dstate, cache)
    ref_dx, ref_dstate0, ref_grads = reference.backward(kind, dhs, dstate, caches)
    assert set(grads) == set(ref_grads) == set(p)
    for name in p:
        np.testing.assert_allclose(grads[name], ref_grads[name], rtol=1e-10, atol=1e-12, err_msg=name)
    for a, b in zip(dstate0, ref_dstate0):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    if ids:
        assert dx is None  # the fast cell keeps one-hot input as a row gather, with no dx
    else:
        np.testing.assert_allclose(dx, ref_dx, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind, options", CASES, ids=IDS)
def test_the_reference_passes_a_float64_gradient_check(kind, options):
    # loss = sum(dhs * hs) + sum(dstate * final state): its gradient w.r.t. hs is dhs.
    _, p, x, state, dhs, dstate = _setup(kind, options, ids=False, seed=1)
    opts = _ref_options(options)

    def loss(p, x, state):
        hs, final, _ = reference.forward(kind, p, x, state, **opts)
        return float((dhs * hs).sum() + sum((d * f).sum() for d, f in zip(dstate, final)))

    _, _, caches = reference.forward(kind, p, x, state, **opts)
    dx, dstate0, grads = reference.backward(kind, dhs, dstate, caches)

    def numeric(array, f):
        return numeric_grad(f, array, eps=1e-6)

    for name in p:
        want = numeric(p[name], lambda: loss(p, x, state))
        assert relative_error(grads[name], want) < 1e-7, name
    assert relative_error(dx, numeric(x, lambda: loss(p, x, state))) < 1e-7
    states = [s.copy() for s in state]
    for k, s in enumerate(states):
        want = numeric(s, lambda: loss(p, x, tuple(states)))
        assert relative_error(dstate0[k], want) < 1e-7
