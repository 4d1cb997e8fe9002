"""Packed, fused cells against naive gate-by-gate references; state carrying; one-hot input."""

import numpy as np
import pytest

from charrnn.cell_base import project, transposed
from charrnn.cells import GRU, LSTM, RNN
from charrnn.functional import scatter_add_rows


def one_hot(ids, depth, dtype):
    """ids (...) int -> (..., depth) with a single 1 per row: the input the row gathers stand for."""
    return np.eye(depth, dtype=dtype)[ids]


def sig(a):
    return 1.0 / (1.0 + np.exp(-a))


def naive_lstm(p, xs, h, c, peephole=False):
    """Textbook LSTM, one gate at a time, unpacking PyTorch's i, f, g, o order."""
    H = h.shape[1]
    W = {k: (p["Wx"][:, j * H:(j + 1) * H], p["Wh"][:, j * H:(j + 1) * H], p["b"][j * H:(j + 1) * H])
         for j, k in enumerate("ifgo")}
    outs = []
    for x in xs:
        pre = {k: x @ Wx + h @ Wh + b for k, (Wx, Wh, b) in W.items()}
        i = sig(pre["i"] + (p["pi"] * c if peephole else 0))
        f = sig(pre["f"] + (p["pf"] * c if peephole else 0))
        g = np.tanh(pre["g"])
        c = f * c + i * g
        o = sig(pre["o"] + (p["po"] * c if peephole else 0))
        h = o * np.tanh(c)
        outs.append(h)
    return np.stack(outs), (h, c)


def naive_gru(p, xs, h):
    H = h.shape[1]
    def part(j):
        s = slice(j * H, (j + 1) * H)
        return p["Wx"][:, s], p["Wh"][:, s], p["bx"][s], p["bh"][s]
    (Wxr, Whr, bxr, bhr), (Wxz, Whz, bxz, bhz), (Wxn, Whn, bxn, bhn) = part(0), part(1), part(2)
    outs = []
    for x in xs:
        r = sig(x @ Wxr + bxr + h @ Whr + bhr)
        z = sig(x @ Wxz + bxz + h @ Whz + bhz)
        n = np.tanh(x @ Wxn + bxn + r * (h @ Whn + bhn))
        h = (1 - z) * n + z * h
        outs.append(h)
    return np.stack(outs), (h,)


def naive_rnn(p, xs, h, relu=False):
    outs = []
    for x in xs:
        a = x @ p["Wx"] + h @ p["Wh"] + p["b"]
        h = np.maximum(a, 0) if relu else np.tanh(a)
        outs.append(h)
    return np.stack(outs), (h,)


def make(cell, T=6, B=3, D=4, seed=0):
    rng = np.random.default_rng(seed)
    params = cell.init_params(rng, np.float64)
    for v in params.values():
        v += rng.normal(0, 0.3, size=v.shape)
    x = rng.normal(size=(T, B, D))
    state = tuple(rng.normal(size=(B, cell.hidden_size)) for _ in cell.state_names)
    return params, x, state


CASES = [
    (lambda: LSTM(4, 5), lambda p, x, s: naive_lstm(p, x, *s)),
    (lambda: LSTM(4, 5, peephole=True), lambda p, x, s: naive_lstm(p, x, *s, peephole=True)),
    (lambda: GRU(4, 5), lambda p, x, s: naive_gru(p, x, *s)),
    (lambda: RNN(4, 5), lambda p, x, s: naive_rnn(p, x, *s)),
    (lambda: RNN(4, 5, "relu"), lambda p, x, s: naive_rnn(p, x, *s, relu=True)),
]
IDS = ["lstm", "lstm-peephole", "gru", "rnn-tanh", "rnn-relu"]


@pytest.mark.parametrize("build,naive", CASES, ids=IDS)
def test_packed_forward_equals_naive_forward(build, naive):
    cell = build()
    p, x, state = make(cell)
    hs, final, _ = cell.forward(p, x, state)
    ref_hs, ref_final = naive(p, x, state)
    np.testing.assert_allclose(hs, ref_hs, rtol=1e-12, atol=1e-12)
    for a, b in zip(final, ref_final):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("build,naive", CASES, ids=IDS)
def test_step_equals_forward(build, naive):
    cell = build()
    p, x, state = make(cell)
    hs, final, _ = cell.forward(p, x, state)
    s = state
    for t in range(x.shape[0]):
        h, s = cell.step(p, x[t], s)
        np.testing.assert_allclose(h, hs[t], rtol=1e-12, atol=1e-12)
    for a, b in zip(s, final):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("build,naive", CASES, ids=IDS)
def test_two_windows_with_carried_state_equal_one_long_window(build, naive):
    cell = build()
    p, x, state = make(cell, T=8)
    hs, final, _ = cell.forward(p, x, state)
    hs1, mid, _ = cell.forward(p, x[:3], state)
    hs2, final2, _ = cell.forward(p, x[3:], mid)
    np.testing.assert_allclose(np.concatenate([hs1, hs2]), hs, rtol=1e-12, atol=1e-12)
    for a, b in zip(final2, final):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("build,naive", CASES, ids=IDS)
def test_one_hot_matmul_equals_row_gather_forward_and_gradient(build, naive):
    cell = build()
    rng = np.random.default_rng(1)
    p, _, state = make(cell)
    ids = rng.integers(0, 4, size=(6, 3))
    dense = one_hot(ids, 4, np.float64)
    hs_ids, _, cache_ids = cell.forward(p, ids, state)
    hs_dense, _, cache_dense = cell.forward(p, dense, state)
    np.testing.assert_allclose(hs_ids, hs_dense, rtol=1e-12, atol=1e-12)
    dhs = rng.normal(size=hs_ids.shape)
    dx_ids, ds_ids, g_ids = cell.backward(p, dhs, None, cache_ids)
    dx_dense, ds_dense, g_dense = cell.backward(p, dhs, None, cache_dense)
    assert dx_ids is None and dx_dense.shape == dense.shape
    for key in g_ids:
        np.testing.assert_allclose(g_ids[key], g_dense[key], rtol=1e-10, atol=1e-12)
    for a, b in zip(ds_ids, ds_dense):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("G", [12, 64, 768, 1024])
def test_project_keeps_the_values_and_spaces_its_rows(G, dtype):
    """Each branch (float input, ids from a small and from a large vocabulary) gives (x Wx + b) k,
    in rows an odd number of cache lines apart wherever G fills whole lines."""
    rng = np.random.default_rng(3)
    T, B = 5, 4
    k = np.where(np.arange(G) < G // 2, -1.0, -2.0).astype(dtype)
    itemsize = np.dtype(dtype).itemsize
    for D, kind in [(6, "float"), (9, "ids"), (3 * T * B, "ids")]:  # the last: more rows than ids
        Wx, b = rng.normal(size=(D, G)).astype(dtype), rng.normal(size=G).astype(dtype)
        ids = rng.integers(0, D, size=(T, B))
        x = rng.normal(size=(T, B, D)).astype(dtype) if kind == "float" else ids
        dense = x if kind == "float" else one_hot(ids, D, dtype)
        out = project(x, Wx, b, k)
        assert out.shape == (T, B, G) and out.dtype == dtype
        np.testing.assert_allclose(out, (dense @ Wx + b) * k, rtol=1e-5 if dtype == np.float32 else 1e-12)
        row_bytes = out.strides[1]
        assert out.strides[2] == itemsize and out.strides[0] == B * row_bytes
        if (G * itemsize) % 64:
            assert row_bytes == G * itemsize
        else:
            assert row_bytes % 64 == 0 and (row_bytes // 64) % 2 == 1 and row_bytes - G * itemsize <= 64


@pytest.mark.parametrize("shape", [(3, 5), (16, 64), (32, 1024)])
def test_transposed_is_the_scaled_transpose_bit_for_bit(shape):
    rng = np.random.default_rng(4)
    W = rng.normal(size=shape).astype(np.float32)
    k = np.where(np.arange(shape[1]) % 3, -1.0, -2.0).astype(np.float32)
    for scale, expected in [(k, (W * k).T), (None, W.T)]:
        out = transposed(W, scale)
        assert out.flags.c_contiguous and out.shape == shape[::-1]
        np.testing.assert_array_equal(out, expected)


def test_scatter_add_rows_equals_one_hot_product():
    rng = np.random.default_rng(2)
    ids = rng.integers(0, 7, size=50)
    rows = rng.normal(size=(50, 3))
    np.testing.assert_allclose(scatter_add_rows(ids, rows, 9), one_hot(ids, 9, np.float64).T @ rows,
                               rtol=1e-12, atol=1e-12)


def test_lstm_forget_bias_starts_at_one():
    p = LSTM(3, 4).init_params(np.random.default_rng(0))
    np.testing.assert_array_equal(p["b"][4:8], 1.0)
    np.testing.assert_array_equal(np.r_[p["b"][:4], p["b"][8:]], 0.0)


def test_float32_stays_float32():
    cell = LSTM(4, 5)
    p = cell.init_params(np.random.default_rng(0), np.float32)
    ids = np.zeros((3, 2), dtype=np.uint16)
    hs, state, cache = cell.forward(p, ids, cell.init_state(2, np.float32))
    _, dstate, grads = cell.backward(p, np.ones_like(hs), None, cache)
    assert hs.dtype == np.float32 and all(s.dtype == np.float32 for s in state + dstate)
    assert all(g.dtype == np.float32 for g in grads.values())
