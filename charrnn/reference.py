"""The recurrent cells written for reading: one timestep forward and one timestep backward each,
in the README's notation, then composed over a window. Start here to learn how the cells work.

Nothing here is tuned for speed (charrnn.cells is, and the tests check that both give the same
numbers, forward and every gradient). The style is CS231n's: `*_step_forward` returns the new
state and a cache of what its backward pass needs; `*_step_backward` takes the gradients that
reach this step's outputs and returns the gradients of its inputs and parameters.

Shapes: B streams, D inputs, H hidden units, T timesteps. Parameters are dicts with the keys
of charrnn.cells: LSTM Wx (D, 4H), Wh (H, 4H), b (4H,), and with peepholes pi, pf, po (H,);
GRU Wx (D, 3H), Wh (H, 3H), bx, bh (3H,); RNN Wx (D, H), Wh (H, H), b (H,). Gates are packed in
PyTorch's order: LSTM i, f, g, o; GRU r, z, n.
"""

from __future__ import annotations

import numpy as np

__all__ = ["sigmoid", "one_hot", "lstm_step_forward", "lstm_step_backward", "gru_step_forward",
           "gru_step_backward", "rnn_step_forward", "rnn_step_backward", "forward", "backward"]


def sigmoid(a: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-a))


def one_hot(ids: np.ndarray, size: int, dtype=np.float64) -> np.ndarray:
    """ids (...,) int -> (..., size) with a single 1 per row."""
    return np.eye(size, dtype=dtype)[ids]


# -- LSTM ---------------------------------------------------------------------------------------


def lstm_step_forward(x, h_prev, c_prev, p, peephole=False):
    """x (B, D), h_prev (B, H), c_prev (B, H) -> h (B, H), c (B, H), cache.

        a  = x Wx + h_prev Wh + b                    (B, 4H), split into a_i, a_f, a_g, a_o
        i  = σ(a_i + pi ⊙ c_prev)   f = σ(a_f + pf ⊙ c_prev)   g = tanh(a_g)
        c  = f ⊙ c_prev + i ⊙ g
        o  = σ(a_o + po ⊙ c)        h = o ⊙ tanh(c)  (the peephole terms only with peephole)
    """
    H = h_prev.shape[1]
    a = x @ p["Wx"] + h_prev @ p["Wh"] + p["b"]
    a_i, a_f, a_g, a_o = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]
    if peephole:
        a_i = a_i + p["pi"] * c_prev
        a_f = a_f + p["pf"] * c_prev
    i, f, g = sigmoid(a_i), sigmoid(a_f), np.tanh(a_g)
    c = f * c_prev + i * g
    if peephole:
        a_o = a_o + p["po"] * c
    o = sigmoid(a_o)
    tanh_c = np.tanh(c)
    h = o * tanh_c
    cache = (x, h_prev, c_prev, i, f, g, o, c, tanh_c, p, peephole)
    return h, c, cache


def lstm_step_backward(dh, dc, cache):
    """dh, dc (B, H): the loss's gradient w.r.t. this step's h and c (from the layer above and
    from step t + 1). Returns dx (B, D), dh_prev (B, H), dc_prev (B, H), grads (the keys of p).

    Read it bottom-up against lstm_step_forward; σ' = σ (1 - σ) and tanh' = 1 - tanh².
    """
    x, h_prev, c_prev, i, f, g, o, c, tanh_c, p, peephole = cache
    # h = o ⊙ tanh(c)
    do = dh * tanh_c
    dc = dc + dh * o * (1 - tanh_c ** 2)
    # o = σ(a_o + po ⊙ c): with a peephole, a_o also depends on the new cell c
    da_o = do * o * (1 - o)
    if peephole:
        dc = dc + da_o * p["po"]
    # c = f ⊙ c_prev + i ⊙ g
    di, df, dg = dc * g, dc * c_prev, dc * i
    dc_prev = dc * f
    # i = σ(a_i + pi ⊙ c_prev), f = σ(a_f + pf ⊙ c_prev), g = tanh(a_g)
    da_i = di * i * (1 - i)
    da_f = df * f * (1 - f)
    da_g = dg * (1 - g ** 2)
    if peephole:
        dc_prev = dc_prev + da_i * p["pi"] + da_f * p["pf"]
    # a = x Wx + h_prev Wh + b
    da = np.concatenate([da_i, da_f, da_g, da_o], axis=1)       # (B, 4H)
    grads = {"Wx": x.T @ da, "Wh": h_prev.T @ da, "b": da.sum(axis=0)}
    if peephole:
        grads["pi"] = (da_i * c_prev).sum(axis=0)
        grads["pf"] = (da_f * c_prev).sum(axis=0)
        grads["po"] = (da_o * c).sum(axis=0)
    return da @ p["Wx"].T, da @ p["Wh"].T, dc_prev, grads


# -- GRU ----------------------------------------------------------------------------------------


def gru_step_forward(x, h_prev, p):
    """x (B, D), h_prev (B, H) -> h (B, H), cache.

        r  = σ(x Wx_r + bx_r + h_prev Wh_r + bh_r)
        z  = σ(x Wx_z + bx_z + h_prev Wh_z + bh_z)
        n  = tanh(x Wx_n + bx_n + r ⊙ (h_prev Wh_n + bh_n))
        h  = (1 - z) ⊙ n + z ⊙ h_prev
    """
    H = h_prev.shape[1]
    ax = x @ p["Wx"] + p["bx"]        # (B, 3H): the input's part of every gate
    ah = h_prev @ p["Wh"] + p["bh"]   # (B, 3H): the previous state's part
    r = sigmoid(ax[:, :H] + ah[:, :H])
    z = sigmoid(ax[:, H:2 * H] + ah[:, H:2 * H])
    hn = ah[:, 2 * H:]                # h_prev Wh_n + bh_n, which r scales
    n = np.tanh(ax[:, 2 * H:] + r * hn)
    h = (1 - z) * n + z * h_prev
    return h, (x, h_prev, r, z, n, hn, p)


def gru_step_backward(dh, cache):
    """dh (B, H): the loss's gradient w.r.t. this step's h. Returns dx (B, D), dh_prev (B, H),
    grads (Wx, Wh, bx, bh)."""
    x, h_prev, r, z, n, hn, p = cache
    # h = (1 - z) ⊙ n + z ⊙ h_prev
    dn = dh * (1 - z)
    dz = dh * (h_prev - n)
    dh_prev = dh * z
    # n = tanh(ax_n + r ⊙ hn)
    dan = dn * (1 - n ** 2)
    dr = dan * hn
    dhn = dan * r
    # r, z = σ(ax + ah)
    dar = dr * r * (1 - r)
    daz = dz * z * (1 - z)
    dax = np.concatenate([dar, daz, dan], axis=1)      # (B, 3H) w.r.t. x Wx + bx
    dah = np.concatenate([dar, daz, dhn], axis=1)      # (B, 3H) w.r.t. h_prev Wh + bh
    grads = {"Wx": x.T @ dax, "Wh": h_prev.T @ dah, "bx": dax.sum(axis=0), "bh": dah.sum(axis=0)}
    return dax @ p["Wx"].T, dh_prev + dah @ p["Wh"].T, grads


# -- vanilla RNN --------------------------------------------------------------------------------


def rnn_step_forward(x, h_prev, p, nonlinearity="tanh"):
    """x (B, D), h_prev (B, H) -> h (B, H), cache.   h = tanh(x Wx + h_prev Wh + b), or max(0, ·)."""
    a = x @ p["Wx"] + h_prev @ p["Wh"] + p["b"]
    h = np.tanh(a) if nonlinearity == "tanh" else np.maximum(a, 0.0)
    return h, (x, h_prev, a, h, p, nonlinearity)


def rnn_step_backward(dh, cache):
    """dh (B, H) -> dx (B, D), dh_prev (B, H), grads (Wx, Wh, b)."""
    x, h_prev, a, h, p, nonlinearity = cache
    da = dh * (1 - h ** 2) if nonlinearity == "tanh" else dh * (a > 0)
    grads = {"Wx": x.T @ da, "Wh": h_prev.T @ da, "b": da.sum(axis=0)}
    return da @ p["Wx"].T, da @ p["Wh"].T, grads


# -- a window of T steps --------------------------------------------------------------------------


def forward(kind, p, x, state, peephole=False, nonlinearity="tanh"):
    """Run a cell over a window: x (T, B, D) float, or (T, B) ids meaning one-hot rows of D;
    state: (h0, c0) for "lstm", (h0,) otherwise, each (B, H).
    Returns hs (T, B, H), the final state (same structure), caches (one per step)."""
    if x.dtype.kind in "iu":
        x = one_hot(x, p["Wx"].shape[0], p["Wx"].dtype)
    hs, caches = [], []
    state = tuple(state)
    for x_t in x:
        if kind == "lstm":
            h, c, cache = lstm_step_forward(x_t, state[0], state[1], p, peephole)
            state = (h, c)
        elif kind == "gru":
            h, cache = gru_step_forward(x_t, state[0], p)
            state = (h,)
        else:
            h, cache = rnn_step_forward(x_t, state[0], p, nonlinearity)
            state = (h,)
        hs.append(h)
        caches.append(cache)
    return np.stack(hs), state, caches


def backward(kind, dhs, dstate, caches):
    """Backpropagation through time over the window of `forward`.

    dhs (T, B, H): the loss's gradient w.r.t. each step's output h (from the layer above);
    dstate: its gradient w.r.t. the final state (same structure as the state), or None.
    Returns dx (T, B, D) (w.r.t. the one-hot rows for ids), dstate0 (w.r.t. the initial state),
    grads: the parameters' gradients summed over the window.
    """
    T, B, H = dhs.shape
    zeros = np.zeros((B, H), dtype=dhs.dtype)
    carried = list(dstate) if dstate is not None else [zeros] * (2 if kind == "lstm" else 1)
    dxs, grads = [None] * T, {}
    for t in range(T - 1, -1, -1):
        dh = dhs[t] + carried[0]      # h_t feeds the layer above and step t + 1
        if kind == "lstm":
            dxs[t], dh_prev, dc_prev, step_grads = lstm_step_backward(dh, carried[1], caches[t])
            carried = [dh_prev, dc_prev]
        elif kind == "gru":
            dxs[t], dh_prev, step_grads = gru_step_backward(dh, caches[t])
            carried = [dh_prev]
        else:
            dxs[t], dh_prev, step_grads = rnn_step_backward(dh, caches[t])
            carried = [dh_prev]
        for name, g in step_grads.items():
            grads[name] = grads[name] + g if name in grads else g
    return np.stack(dxs), tuple(carried), grads
