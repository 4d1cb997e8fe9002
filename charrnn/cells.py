"""Recurrent layers: LSTM (optionally with peepholes), GRU and the vanilla RNN.

Each cell is a bundle of pure functions over an explicit parameter dict `p`:

    init_params(rng, dtype) -> p
    forward(p, x, state)            -> hs (T, B, H), final state, cache
    backward(p, dhs, dstate, cache) -> dx, dstate0, grads        (grads has the keys of p)
    step(p, x, state)               -> h (B, H), state           (one timestep, no cache; sampling)

The input x is either float (T, B, D) or integer ids (T, B) meaning one-hot vectors of size D.
One-hot input is implemented as a row gather of Wx (identical to one_hot(ids) @ Wx), and its
gradient as a scatter-add of rows; dx is then None. A state is a tuple of (B, H) arrays:
(h, c) for the LSTM, (h,) for the others. Cells keep no activations between calls.

Speed: the input projection of all T steps is one GEMM before the time loop and the weight
gradients are one GEMM each after it, so only h @ Wh and a few elementwise calls remain per
timestep. Sigmoid gates are computed by the same tanh call as the tanh gates, through
sigmoid(a) = 0.5 + 0.5 tanh(a / 2): their columns are pre-scaled by 1/2. The backward pass
precomputes, vectorised over all T, each gate's local derivative times the value it multiplies,
so the loop only scales those factors by the incoming dh or dc.
"""

from __future__ import annotations

import numpy as np

from .functional import scatter_add_rows, sigmoid


def _uniform(rng: np.random.Generator, shape, bound: float, dtype) -> np.ndarray:
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


def _is_ids(x: np.ndarray) -> bool:
    return np.issubdtype(x.dtype, np.integer)


def _project(x: np.ndarray, Wx: np.ndarray, b: np.ndarray) -> np.ndarray:
    """x (T, B, D) float or (T, B) ids -> x Wx + b, (T, B, G), a fresh array the caller may overwrite."""
    if _is_ids(x):
        out = np.take(Wx, x, axis=0)
    else:
        T, B, D = x.shape
        out = (x.reshape(T * B, D) @ Wx).reshape(T, B, -1)
    out += b
    return out


def _input_grads(x: np.ndarray, Wx: np.ndarray, dA: np.ndarray):
    """Backward of _project for the input weights: dA (T, B, G) -> (dx or None, dWx)."""
    T, B, G = dA.shape
    dA2 = dA.reshape(T * B, G)
    if _is_ids(x):
        return None, scatter_add_rows(x.reshape(-1), dA2, Wx.shape[0])
    x2 = x.reshape(T * B, -1)
    return (dA2 @ Wx.T).reshape(x.shape), x2.T @ dA2


class LSTM:
    """Long short-term memory, gates packed in PyTorch's order i, f, g, o.

        a = x Wx + h Wh + b                      Wx (D, 4H), Wh (H, 4H), b (4H,)
        i, f, o = sigmoid(a_i, a_f, a_o)         g = tanh(a_g)
        c' = f * c + i * g                       h' = o * tanh(c')

    With peepholes (Gers & Schmidhuber 2000) the gates also see the cell through per-unit
    weights pi, pf, po (H,): a_i += pi * c, a_f += pf * c (previous cell), a_o += po * c' (new cell).
    """

    state_names = ("h", "c")

    def __init__(self, input_size: int, hidden_size: int, peephole: bool = False):
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.peephole = peephole
        H = hidden_size
        # tanh(scale * a) then alpha * . + beta turns the packed block into (i, f, g, o).
        self._scale = np.r_[np.full(2 * H, 0.5), np.ones(H), np.full(H, 0.5)]
        self._beta = np.r_[np.full(2 * H, 0.5), np.zeros(H), np.full(H, 0.5)]

    def init_params(self, rng: np.random.Generator, dtype=np.float32) -> dict:
        D, H = self.input_size, self.hidden_size
        bound = 1.0 / np.sqrt(H)
        p = {
            "Wx": _uniform(rng, (D, 4 * H), bound, dtype),
            "Wh": _uniform(rng, (H, 4 * H), bound, dtype),
            "b": np.zeros(4 * H, dtype=dtype),
        }
        # A forget bias of 1 keeps the cell's memory open early in training.
        p["b"][H : 2 * H] = 1.0
        if self.peephole:
            for name in ("pi", "pf", "po"):
                p[name] = _uniform(rng, (H,), bound, dtype)
        return p

    def init_state(self, batch_size: int, dtype=np.float32) -> tuple:
        zeros = np.zeros((batch_size, self.hidden_size), dtype=dtype)
        return (zeros, zeros.copy())

    def forward(self, p: dict, x: np.ndarray, state: tuple):
        h0, c0 = state
        T, B = x.shape[:2]
        H = self.hidden_size
        dt = p["Wh"].dtype
        scale, beta = self._scale.astype(dt), self._beta.astype(dt)
        alpha = 1 - beta  # 0.5 on sigmoid columns, 1 on g

        # gates[t] holds the pre-activations, then (in place) the activations i, f, g, o.
        gates = _project(x, p["Wx"], p["b"])
        gates *= scale
        Wh_s = p["Wh"] * scale
        hbuf = np.empty((T + 1, B, H), dtype=dt)  # hbuf[0] = h0, hbuf[t+1] = h_t
        cbuf = np.empty((T + 1, B, H), dtype=dt)
        tanh_c = np.empty((T, B, H), dtype=dt)
        hbuf[0], cbuf[0] = h0, c0
        rec = np.empty((B, 4 * H), dtype=dt)
        ig = np.empty((B, H), dtype=dt)
        if self.peephole:
            peep_if = np.stack([p["pi"], p["pf"]]) * dt.type(0.5)  # (2, H), scaled like a_i, a_f
            peep_o = p["po"] * dt.type(0.5)
            peep_tmp = np.empty((B, 2, H), dtype=dt)
            o_tmp = np.empty((B, H), dtype=dt)

        for t in range(T):
            g4 = gates[t]
            np.matmul(hbuf[t], Wh_s, out=rec)
            g4 += rec
            if self.peephole:
                np.multiply(peep_if, cbuf[t][:, None, :], out=peep_tmp)
                g4.reshape(B, 4, H)[:, :2] += peep_tmp
                np.tanh(g4[:, : 3 * H], out=g4[:, : 3 * H])
                g4[:, : 2 * H] *= 0.5
                g4[:, : 2 * H] += 0.5
            else:
                np.tanh(g4, out=g4)
                g4 *= alpha
                g4 += beta
            i, f, g, o = g4[:, :H], g4[:, H : 2 * H], g4[:, 2 * H : 3 * H], g4[:, 3 * H :]
            c = cbuf[t + 1]
            np.multiply(f, cbuf[t], out=c)
            np.multiply(i, g, out=ig)
            c += ig
            if self.peephole:
                np.multiply(peep_o, c, out=o_tmp)
                o += o_tmp
                np.tanh(o, out=o)
                o *= 0.5
                o += 0.5
            np.tanh(c, out=tanh_c[t])
            np.multiply(o, tanh_c[t], out=hbuf[t + 1])

        cache = (x, gates, hbuf, cbuf, tanh_c)
        return hbuf[1:], (hbuf[T].copy(), cbuf[T].copy()), cache

    def backward(self, p: dict, dhs: np.ndarray, dstate, cache):
        x, gates, hbuf, cbuf, tanh_c = cache
        T, B, H = dhs.shape
        dt = gates.dtype
        g4 = gates.reshape(T, B, 4, H)
        i, f, g, o = g4[:, :, 0], g4[:, :, 1], g4[:, :, 2], g4[:, :, 3]
        c_prev = cbuf[:-1]

        # d a_k = (incoming dc or dh) * local[k], with local = derivative of the gate times the
        # value it multiplies: i*g, f*c_prev, g*i enter c'; o*tanh(c') gives h'.
        local = np.empty((T, B, 4, H), dtype=dt)
        local[:, :, 0] = g * i * (1 - i)
        local[:, :, 1] = c_prev * f * (1 - f)
        local[:, :, 2] = i * (1 - g * g)
        local[:, :, 3] = tanh_c * o * (1 - o)
        dc_from_h = o * (1 - tanh_c * tanh_c)  # dc'/dh' (T, B, H)

        dh_total = dhs.copy()  # (T, B, H), receives the recurrent gradient as we go back
        dA = np.empty((T, B, 4, H), dtype=dt)
        dh_next, dc_next = (np.zeros((B, H), dt), np.zeros((B, H), dt)) if dstate is None else (
            dstate[0].astype(dt, copy=True), dstate[1].astype(dt, copy=True))
        dh_total[T - 1] += dh_next
        WhT = np.ascontiguousarray(p["Wh"].T)
        dc = np.empty((B, H), dtype=dt)
        rec = np.empty((B, H), dtype=dt)
        if self.peephole:
            pi, pf, po = p["pi"], p["pf"], p["po"]
            tmp = np.empty((B, H), dtype=dt)

        for t in range(T - 1, -1, -1):
            dh = dh_total[t]
            np.multiply(dh, local[t, :, 3], out=dA[t, :, 3])  # d a_o
            np.multiply(dh, dc_from_h[t], out=dc)
            dc += dc_next
            if self.peephole:
                np.multiply(dA[t, :, 3], po, out=tmp)
                dc += tmp
            np.multiply(local[t, :, :3], dc[:, None, :], out=dA[t, :, :3])  # d a_i, d a_f, d a_g
            np.multiply(dc, f[t], out=dc_next)
            if self.peephole:
                np.multiply(dA[t, :, 0], pi, out=tmp)
                dc_next += tmp
                np.multiply(dA[t, :, 1], pf, out=tmp)
                dc_next += tmp
            np.matmul(dA[t].reshape(B, 4 * H), WhT, out=rec)
            if t > 0:
                dh_total[t - 1] += rec
        dh0 = rec.copy()

        dA_flat = dA.reshape(T * B, 4 * H)
        dx, dWx = _input_grads(x, p["Wx"], dA.reshape(T, B, 4 * H))
        grads = {
            "Wx": dWx,
            "Wh": hbuf[:-1].reshape(T * B, H).T @ dA_flat,
            "b": dA_flat.sum(axis=0),
        }
        if self.peephole:
            grads["pi"] = np.einsum("tbh,tbh->h", dA[:, :, 0], c_prev)
            grads["pf"] = np.einsum("tbh,tbh->h", dA[:, :, 1], c_prev)
            grads["po"] = np.einsum("tbh,tbh->h", dA[:, :, 3], cbuf[1:])
        return dx, (dh0, dc_next.copy()), grads

    def step(self, p: dict, x: np.ndarray, state: tuple):
        h, c = state
        H = self.hidden_size
        a = (p["Wx"][x] if _is_ids(x) else x @ p["Wx"]) + h @ p["Wh"] + p["b"]
        if self.peephole:
            a[:, :H] += p["pi"] * c
            a[:, H : 2 * H] += p["pf"] * c
        i, f = sigmoid(a[:, :H]), sigmoid(a[:, H : 2 * H])
        c = f * c + i * np.tanh(a[:, 2 * H : 3 * H])
        a_o = a[:, 3 * H :] + p["po"] * c if self.peephole else a[:, 3 * H :]
        h = sigmoid(a_o) * np.tanh(c)
        return h, (h, c)


class GRU:
    """Gated recurrent unit in PyTorch's form, gates packed r, z, n.

        r = sigmoid(x Wx_r + bx_r + h Wh_r + bh_r)         Wx (D, 3H), Wh (H, 3H)
        z = sigmoid(x Wx_z + bx_z + h Wh_z + bh_z)         bx, bh (3H,)
        n = tanh(x Wx_n + bx_n + r * (h Wh_n + bh_n))
        h' = (1 - z) * n + z * h
    """

    state_names = ("h",)

    def __init__(self, input_size: int, hidden_size: int):
        self.input_size = input_size
        self.hidden_size = hidden_size
        H = hidden_size
        self._scale = np.r_[np.full(2 * H, 0.5), np.ones(H)]

    def init_params(self, rng: np.random.Generator, dtype=np.float32) -> dict:
        D, H = self.input_size, self.hidden_size
        bound = 1.0 / np.sqrt(H)
        return {
            "Wx": _uniform(rng, (D, 3 * H), bound, dtype),
            "Wh": _uniform(rng, (H, 3 * H), bound, dtype),
            "bx": np.zeros(3 * H, dtype=dtype),
            "bh": np.zeros(3 * H, dtype=dtype),
        }

    def init_state(self, batch_size: int, dtype=np.float32) -> tuple:
        return (np.zeros((batch_size, self.hidden_size), dtype=dtype),)

    def forward(self, p: dict, x: np.ndarray, state: tuple):
        (h0,) = state
        T, B = x.shape[:2]
        H = self.hidden_size
        dt = p["Wh"].dtype
        scale = self._scale.astype(dt)

        # gates[t]: x-side pre-activations, overwritten in place by r, z, n.
        gates = _project(x, p["Wx"], p["bx"])
        gates *= scale
        Wh_s, bh_s = p["Wh"] * scale, p["bh"] * scale
        hside = np.empty((T, B, 3 * H), dtype=dt)  # h Wh + bh (r, z columns halved); n part kept for backward
        hbuf = np.empty((T + 1, B, H), dtype=dt)
        hbuf[0] = h0
        diff = np.empty((B, H), dtype=dt)

        for t in range(T):
            g3, hs = gates[t], hside[t]
            np.matmul(hbuf[t], Wh_s, out=hs)
            hs += bh_s
            rz, n = g3[:, : 2 * H], g3[:, 2 * H :]
            rz += hs[:, : 2 * H]
            np.tanh(rz, out=rz)
            rz *= 0.5
            rz += 0.5
            np.multiply(rz[:, :H], hs[:, 2 * H :], out=diff)
            n += diff
            np.tanh(n, out=n)
            np.subtract(hbuf[t], n, out=diff)
            diff *= rz[:, H:]
            np.add(n, diff, out=hbuf[t + 1])

        cache = (x, gates, hside, hbuf)
        return hbuf[1:], (hbuf[T].copy(),), cache

    def backward(self, p: dict, dhs: np.ndarray, dstate, cache):
        x, gates, hside, hbuf = cache
        T, B, H = dhs.shape
        dt = gates.dtype
        g3 = gates.reshape(T, B, 3, H)
        r, z, n = g3[:, :, 0], g3[:, :, 1], g3[:, :, 2]
        hn = hside[:, :, 2 * H :]  # h Wh_n + bh_n
        h_prev = hbuf[:-1]

        # Every pre-activation gradient is dh times a factor known after the forward pass.
        dn_pre = (1 - z) * (1 - n * n)
        x_local = np.empty((T, B, 3, H), dtype=dt)   # d(x-side pre-activations) / dh
        x_local[:, :, 2] = dn_pre
        x_local[:, :, 1] = (h_prev - n) * z * (1 - z)
        x_local[:, :, 0] = dn_pre * hn * r * (1 - r)
        h_local = x_local.copy()                     # the h side differs only in n: r * dn_pre
        h_local[:, :, 2] = dn_pre * r

        dh_total = dhs.copy()
        if dstate is not None:
            dh_total[T - 1] += dstate[0]
        dAh = np.empty((T, B, 3, H), dtype=dt)
        WhT = np.ascontiguousarray(p["Wh"].T)
        rec = np.empty((B, H), dtype=dt)
        direct = np.empty((B, H), dtype=dt)

        for t in range(T - 1, -1, -1):
            dh = dh_total[t]
            np.multiply(h_local[t], dh[:, None, :], out=dAh[t])
            np.matmul(dAh[t].reshape(B, 3 * H), WhT, out=rec)
            np.multiply(dh, z[t], out=direct)
            rec += direct
            if t > 0:
                dh_total[t - 1] += rec

        dAx = x_local
        dAx *= dh_total[:, :, None, :]
        dAx = dAx.reshape(T, B, 3 * H)
        dAh_flat = dAh.reshape(T * B, 3 * H)
        dx, dWx = _input_grads(x, p["Wx"], dAx)
        grads = {
            "Wx": dWx,
            "Wh": h_prev.reshape(T * B, H).T @ dAh_flat,
            "bx": dAx.reshape(T * B, 3 * H).sum(axis=0),
            "bh": dAh_flat.sum(axis=0),
        }
        return dx, (rec.copy(),), grads

    def step(self, p: dict, x: np.ndarray, state: tuple):
        (h,) = state
        H = self.hidden_size
        ax = (p["Wx"][x] if _is_ids(x) else x @ p["Wx"]) + p["bx"]
        ah = h @ p["Wh"] + p["bh"]
        r = sigmoid(ax[:, :H] + ah[:, :H])
        z = sigmoid(ax[:, H : 2 * H] + ah[:, H : 2 * H])
        n = np.tanh(ax[:, 2 * H :] + r * ah[:, 2 * H :])
        h = (1 - z) * n + z * h
        return h, (h,)


class RNN:
    """Vanilla (Elman) RNN: h' = tanh(x Wx + h Wh + b), or ReLU in place of tanh.

    Wx (D, H), Wh (H, H), b (H,).
    """

    state_names = ("h",)

    def __init__(self, input_size: int, hidden_size: int, nonlinearity: str = "tanh"):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', not {nonlinearity!r}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.nonlinearity = nonlinearity

    def init_params(self, rng: np.random.Generator, dtype=np.float32) -> dict:
        D, H = self.input_size, self.hidden_size
        bound = 1.0 / np.sqrt(H)
        return {
            "Wx": _uniform(rng, (D, H), bound, dtype),
            "Wh": _uniform(rng, (H, H), bound, dtype),
            "b": np.zeros(H, dtype=dtype),
        }

    def init_state(self, batch_size: int, dtype=np.float32) -> tuple:
        return (np.zeros((batch_size, self.hidden_size), dtype=dtype),)

    def _activate(self, a: np.ndarray) -> None:
        if self.nonlinearity == "tanh":
            np.tanh(a, out=a)
        else:
            np.maximum(a, 0, out=a)

    def forward(self, p: dict, x: np.ndarray, state: tuple):
        (h0,) = state
        T, B = x.shape[:2]
        H = self.hidden_size
        dt = p["Wh"].dtype
        pre = _project(x, p["Wx"], p["b"])
        hbuf = np.empty((T + 1, B, H), dtype=dt)
        hbuf[0] = h0
        rec = np.empty((B, H), dtype=dt)
        for t in range(T):
            np.matmul(hbuf[t], p["Wh"], out=rec)
            np.add(pre[t], rec, out=hbuf[t + 1])
            self._activate(hbuf[t + 1])
        cache = (x, hbuf)
        return hbuf[1:], (hbuf[T].copy(),), cache

    def backward(self, p: dict, dhs: np.ndarray, dstate, cache):
        x, hbuf = cache
        T, B, H = dhs.shape
        hs = hbuf[1:]
        slope = 1 - hs * hs if self.nonlinearity == "tanh" else (hs > 0).astype(hs.dtype)
        dh_total = dhs.copy()
        if dstate is not None:
            dh_total[T - 1] += dstate[0]
        dA = np.empty_like(dh_total)
        WhT = np.ascontiguousarray(p["Wh"].T)
        rec = np.empty((B, H), dtype=dhs.dtype)
        for t in range(T - 1, -1, -1):
            np.multiply(dh_total[t], slope[t], out=dA[t])
            np.matmul(dA[t], WhT, out=rec)
            if t > 0:
                dh_total[t - 1] += rec
        dA_flat = dA.reshape(T * B, H)
        dx, dWx = _input_grads(x, p["Wx"], dA)
        grads = {
            "Wx": dWx,
            "Wh": hbuf[:-1].reshape(T * B, H).T @ dA_flat,
            "b": dA_flat.sum(axis=0),
        }
        return dx, (rec.copy(),), grads

    def step(self, p: dict, x: np.ndarray, state: tuple):
        (h,) = state
        a = (p["Wx"][x] if _is_ids(x) else x @ p["Wx"]) + h @ p["Wh"] + p["b"]
        self._activate(a)
        return a, (a,)


CELLS = {"lstm": LSTM, "gru": GRU, "rnn": RNN}


def make_cell(kind: str, input_size: int, hidden_size: int, *, peephole: bool = False,
              nonlinearity: str = "tanh"):
    """Build a cell by name ('lstm', 'gru' or 'rnn')."""
    if kind == "lstm":
        return LSTM(input_size, hidden_size, peephole=peephole)
    if kind == "gru":
        return GRU(input_size, hidden_size)
    if kind == "rnn":
        return RNN(input_size, hidden_size, nonlinearity=nonlinearity)
    raise ValueError(f"unknown cell {kind!r}; expected one of {sorted(CELLS)}")
