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

Speed: the input projection of all T steps is one GEMM (or row gather) before the time loop
and the weight gradients are one GEMM each after it, so only h @ Wh and a few in-place
elementwise calls remain per timestep. np.exp is the cheapest transcendental NumPy has on
float32 (np.tanh costs about twice as much), so the gated cells keep their pre-activations
multiplied by a per-column constant k and turn a whole gate block into activations with one
exp, one add and one reciprocal: sigmoid(a) = 1 / (1 + exp(-a)) (k = -1) and
tanh(a) = 2 sigmoid(2a) - 1 (k = -2). The backward passes derive each step's local derivatives
in cache from the stored activations instead of precomputing them over all T in full-size
temporaries. The elementwise part of a step is one function shared by forward and step.
"""

from __future__ import annotations

import numpy as np

from . import names
from .functional import scatter_add_rows


def _uniform(rng: np.random.Generator, shape, bound: float, dtype) -> np.ndarray:
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


def _is_ids(x: np.ndarray) -> bool:
    return x.dtype.kind in "iu"  # np.issubdtype costs microseconds: too much per sampled character


def _project(x: np.ndarray, Wx: np.ndarray, b: np.ndarray, k: np.ndarray | None = None) -> np.ndarray:
    """x (T, B, D) float or (T, B) ids -> (x Wx + b) * k, (T, B, G): a fresh array to overwrite.

    k (G,) scales each column (None: no scaling); the cells use it to fold constants of their
    nonlinearities into the pre-activations.
    """
    T, B = x.shape[:2]
    if k is None:
        k = np.ones((), dtype=Wx.dtype)
    if not _is_ids(x):
        out = (x.reshape(T * B, -1) @ (Wx * k)).reshape(T, B, -1)
        out += b * k
        return out
    if Wx.shape[0] <= T * B:  # small vocabulary: scale the whole table once, then gather
        table = Wx * k
        table += b * k
        return np.take(table, x, axis=0)
    out = np.take(Wx, x, axis=0)  # large vocabulary: gather first, then scale only those rows
    out += b
    out *= k
    return out


def _sigmoid_of_negated_(z: np.ndarray) -> None:
    """In place: z = -a becomes sigmoid(a) = 1 / (1 + exp(-a)). Call under errstate(over="ignore")."""
    np.exp(z, out=z)
    z += 1
    np.reciprocal(z, out=z)


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
        # Pre-activations are kept multiplied by k so that one exp call per step serves the whole
        # gate block: sigmoid(a) = 1 / (1 + exp(-a)) and tanh(a) = 2 sigmoid(2a) - 1.
        self._k = np.r_[np.full(2 * H, -1.0), np.full(H, -2.0), np.full(H, -1.0)]

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
        k = self._k.astype(dt)

        # gates[t] (B, 4H): k * pre-activations, then in place the activations i, f, s, o with
        # s = sigmoid(2 a_g), so that all four are sigmoids and g = 2 s - 1.
        gates = _project(x, p["Wx"], p["b"], k)
        Wh_k = p["Wh"] * k
        hbuf = np.empty((T + 1, B, H), dtype=dt)  # hbuf[0] = h0, hbuf[t+1] = h_t
        # mult[t] (B, 4, H) holds what each gate's derivative is multiplied by in the backward
        # pass: g, c_{t-1}, 4 i (dg/da_g = 4 s (1 - s)) and tanh(c_t). The cell state c_t itself
        # lives in mult[t+1, :, 1], where step t+1 needs it.
        mult = np.empty((T + 1, B, 4, H), dtype=dt)
        hbuf[0], mult[0, :, 1] = h0, c0
        rec = np.empty((B, 4 * H), dtype=dt)
        tmp = np.empty((B, H), dtype=dt)
        peep = self._peepholes(p)

        with np.errstate(over="ignore"):  # exp(-a) = inf gives sigmoid(a) = 0, the exact limit
            for t in range(T):
                a = gates[t]
                np.matmul(hbuf[t], Wh_k, out=rec)
                a += rec
                m = mult[t]
                _lstm_update(a, m[:, 1], m[:, 0], mult[t + 1, :, 1], m[:, 3], hbuf[t + 1], tmp, peep)
                np.multiply(a[:, :H], 4, out=m[:, 2])

        cache = (x, gates, hbuf, mult)
        return hbuf[1:], (hbuf[T].copy(), mult[T, :, 1].copy()), cache

    def backward(self, p: dict, dhs: np.ndarray, dstate, cache):
        x, gates, hbuf, mult = cache
        T, B, H = dhs.shape
        dt = gates.dtype
        dA = np.empty((T, B, 4 * H), dtype=dt)  # gradient of the loss w.r.t. the pre-activations
        WhT = np.ascontiguousarray(p["Wh"].T)
        # dh_rec: the gradient reaching h_t through h_t Wh (from step t+1), or dstate at t = T-1.
        if dstate is None:
            dh_rec, dc_next = np.zeros((B, H), dt), np.zeros((B, H), dt)
        else:
            dh_rec, dc_next = dstate[0].astype(dt, copy=True), dstate[1].astype(dt, copy=True)
        dh = np.empty((B, H), dtype=dt)
        dc = np.empty((B, H), dtype=dt)
        tmp = np.empty((B, H), dtype=dt)
        if self.peephole:
            pi, pf, po = p["pi"], p["pf"], p["po"]

        for t in range(T - 1, -1, -1):
            np.add(dhs[t], dh_rec, out=dh)
            a = gates[t]
            d = dA[t]
            d4 = d.reshape(B, 4, H)
            # Every gate is a sigmoid s here (g through s = sigmoid(2 a_g)): s' = s (1 - s).
            np.multiply(a, a, out=d)
            np.subtract(a, d, out=d)
            d4 *= mult[t]
            o, tanh_c = a[:, 3 * H :], mult[t, :, 3]
            d4[:, 3] *= dh  # d a_o
            # dc = dh * o * (1 - tanh(c)^2) + dc_next, with o tanh(c)^2 = h tanh(c).
            np.multiply(hbuf[t + 1], tanh_c, out=tmp)
            np.subtract(o, tmp, out=tmp)
            tmp *= dh
            np.add(tmp, dc_next, out=dc)
            if self.peephole:
                np.multiply(d4[:, 3], po, out=tmp)
                dc += tmp
            d4[:, :3] *= dc[:, None, :]  # d a_i, d a_f, d a_g
            np.multiply(dc, a[:, H : 2 * H], out=dc_next)
            if self.peephole:
                np.multiply(d4[:, 0], pi, out=tmp)
                dc_next += tmp
                np.multiply(d4[:, 1], pf, out=tmp)
                dc_next += tmp
            np.matmul(d, WhT, out=dh_rec)

        dA_flat = dA.reshape(T * B, 4 * H)
        dx, dWx = _input_grads(x, p["Wx"], dA)
        grads = {
            "Wx": dWx,
            "Wh": hbuf[:-1].reshape(T * B, H).T @ dA_flat,
            "b": dA_flat.sum(axis=0),
        }
        if self.peephole:
            d4 = dA.reshape(T, B, 4, H)
            cells = mult[:, :, 1]  # c_0 ... c_T
            grads["pi"] = np.einsum("tbh,tbh->h", d4[:, :, 0], cells[:-1])
            grads["pf"] = np.einsum("tbh,tbh->h", d4[:, :, 1], cells[:-1])
            grads["po"] = np.einsum("tbh,tbh->h", d4[:, :, 3], cells[1:])
        return dx, (dh_rec, dc_next), grads

    def step(self, p: dict, x: np.ndarray, state: tuple):
        h, c = state
        B, H = h.shape
        a = np.take(p["Wx"], x, axis=0) if _is_ids(x) else x @ p["Wx"]
        a += h @ p["Wh"]
        a += p["b"]
        a *= self._k.astype(a.dtype)
        g, c_new, tanh_c, h_new, tmp = np.empty((5, B, H), dtype=a.dtype)
        with np.errstate(over="ignore"):
            _lstm_update(a, c, g, c_new, tanh_c, h_new, tmp, self._peepholes(p))
        return h_new, (h_new, c_new)

    def _peepholes(self, p: dict):
        """None, or the peephole weights scaled by k like the gates they feed: (pi, pf) (2, H), po (H,)."""
        if not self.peephole:
            return None
        return -np.stack([p["pi"], p["pf"]]), -p["po"]


def _lstm_update(a, c_prev, g, c, tanh_c, h, tmp, peep) -> None:
    """The elementwise part of one LSTM step, in place; run under np.errstate(over="ignore").

    a (B, 4H): k * pre-activations (see LSTM._k), overwritten with the activations i, f, s, o
    where s = sigmoid(2 a_g). c_prev (B, H): the previous cell. Writes g = 2 s - 1, the new cell c,
    tanh(c) and h, each (B, H); tmp (B, H) is scratch. peep: LSTM._peepholes(p).
    """
    B, H = c_prev.shape
    i, f, s, o = a[:, :H], a[:, H : 2 * H], a[:, 2 * H : 3 * H], a[:, 3 * H :]
    if peep is None:
        _sigmoid_of_negated_(a)
    else:
        a.reshape(B, 4, H)[:, :2] += peep[0] * c_prev[:, None, :]
        _sigmoid_of_negated_(a[:, : 3 * H])
    np.multiply(s, 2, out=g)
    g -= 1
    np.multiply(f, c_prev, out=c)
    np.multiply(i, g, out=tmp)
    c += tmp
    if peep is not None:
        np.multiply(peep[1], c, out=tmp)
        o += tmp
        _sigmoid_of_negated_(o)
    np.tanh(c, out=tanh_c)
    np.multiply(o, tanh_c, out=h)


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
        # As in the LSTM: pre-activations times k, so that sigmoid(a) = 1 / (1 + exp(-a)) for r, z
        # and tanh(a) = 2 sigmoid(2a) - 1 for n all go through exp.
        self._k = np.r_[np.full(2 * H, -1.0), np.full(H, -2.0)]

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

    def _scaled(self, p: dict, dt):
        """k (3H,); the x-side bias (3H,), with bh of r and z folded in (they only ever add), not
        yet scaled; and bh_n (H,) times its k, since it is added inside r * (...)."""
        H = self.hidden_size
        k = self._k.astype(dt)
        bias_x = p["bx"].copy()
        bias_x[: 2 * H] += p["bh"][: 2 * H]
        return k, bias_x, p["bh"][2 * H :] * k[2 * H :]

    def forward(self, p: dict, x: np.ndarray, state: tuple):
        (h0,) = state
        T, B = x.shape[:2]
        H = self.hidden_size
        dt = p["Wh"].dtype
        k, bias_x, bhn_k = self._scaled(p, dt)

        # gates[t] (B, 3H): x-side pre-activations times k, overwritten in place by r, z, n.
        gates = _project(x, p["Wx"], bias_x, k)
        Wh_k = p["Wh"] * k
        hn_k = np.empty((T, B, H), dtype=dt)  # k_n (h Wh_n + bh_n), kept for the backward pass
        hbuf = np.empty((T + 1, B, H), dtype=dt)
        hbuf[0] = h0
        rec = np.empty((B, 3 * H), dtype=dt)
        tmp = np.empty((B, H), dtype=dt)
        with np.errstate(over="ignore"):
            for t in range(T):
                np.matmul(hbuf[t], Wh_k, out=rec)
                _gru_update(gates[t], rec, bhn_k, hbuf[t], hn_k[t], hbuf[t + 1], tmp)

        cache = (x, gates, hn_k, hbuf)
        return hbuf[1:], (hbuf[T].copy(),), cache

    def backward(self, p: dict, dhs: np.ndarray, dstate, cache):
        x, gates, hn_k, hbuf = cache
        T, B, H = dhs.shape
        dt = gates.dtype
        dAx = np.empty((T, B, 3 * H), dtype=dt)  # d loss / d (x Wx + bx), gates r, z, n
        dAh = np.empty((T, B, 3 * H), dtype=dt)  # d loss / d (h Wh + bh): differs in n only
        WhT = np.ascontiguousarray(p["Wh"].T)
        dh_rec = np.zeros((B, H), dt) if dstate is None else dstate[0].astype(dt, copy=True)
        dh = np.empty((B, H), dtype=dt)
        z_dh = np.empty((B, H), dtype=dt)
        tmp = np.empty((B, H), dtype=dt)
        k_n = dt.type(self._k[-1])

        for t in range(T - 1, -1, -1):
            np.add(dhs[t], dh_rec, out=dh)
            g3, dx3, dh3 = gates[t], dAx[t], dAh[t]
            r, z, n = g3[:, :H], g3[:, H : 2 * H], g3[:, 2 * H :]
            d_rz, da_r, da_z, da_n = dx3[:, : 2 * H], dx3[:, :H], dx3[:, H : 2 * H], dx3[:, 2 * H :]
            np.multiply(g3[:, : 2 * H], g3[:, : 2 * H], out=d_rz)
            np.subtract(g3[:, : 2 * H], d_rz, out=d_rz)  # r (1 - r), z (1 - z)
            # d a_n = dh (1 - z) (1 - n^2), with dh (1 - z) = dh - z dh; z dh also reaches h_{t-1}.
            np.multiply(z, dh, out=z_dh)
            np.multiply(n, n, out=tmp)
            np.subtract(1, tmp, out=tmp)
            np.subtract(dh, z_dh, out=da_n)
            da_n *= tmp
            # d a_z = dh (h_{t-1} - n) z (1 - z)
            np.subtract(hbuf[t], n, out=tmp)
            tmp *= dh
            da_z *= tmp
            # d a_r = d a_n (h Wh_n + bh_n) r (1 - r), the stored product being k_n times that.
            np.multiply(da_n, hn_k[t], out=tmp)
            tmp *= 1 / k_n
            da_r *= tmp
            np.copyto(dh3[:, : 2 * H], d_rz)
            np.multiply(da_n, r, out=dh3[:, 2 * H :])
            np.matmul(dh3, WhT, out=dh_rec)
            dh_rec += z_dh

        dAh_flat = dAh.reshape(T * B, 3 * H)
        dx, dWx = _input_grads(x, p["Wx"], dAx)
        grads = {
            "Wx": dWx,
            "Wh": hbuf[:-1].reshape(T * B, H).T @ dAh_flat,
            "bx": dAx.reshape(T * B, 3 * H).sum(axis=0),
            "bh": dAh_flat.sum(axis=0),
        }
        return dx, (dh_rec,), grads

    def step(self, p: dict, x: np.ndarray, state: tuple):
        (h,) = state
        B, H = h.shape
        dt = h.dtype
        k, bias_x, bhn_k = self._scaled(p, dt)
        ax = np.take(p["Wx"], x, axis=0) if _is_ids(x) else x @ p["Wx"]
        ax += bias_x
        ax *= k
        rec = h @ p["Wh"]
        rec *= k  # exact (k is -1 or -2), and cheaper per sampled character than scaling Wh
        hn_k, h_new, tmp = np.empty((3, B, H), dtype=dt)
        with np.errstate(over="ignore"):
            _gru_update(ax, rec, bhn_k, h, hn_k, h_new, tmp)
        return h_new, (h_new,)


def _gru_update(g3, rec, bhn_k, h_prev, hn_k, h, tmp) -> None:
    """The elementwise part of one GRU step, in place; run under np.errstate(over="ignore").

    g3 (B, 3H): k * x-side pre-activations (see GRU._scaled), overwritten with r, z, n.
    rec (B, 3H): h_prev (Wh * k). bhn_k (H,): k * bh_n. Writes hn_k = k * (h Wh_n + bh_n) and
    the new h, each (B, H); tmp (B, H) is scratch.
    """
    H = h.shape[1]
    rz, n, z = g3[:, : 2 * H], g3[:, 2 * H :], g3[:, H : 2 * H]
    rz += rec[:, : 2 * H]
    _sigmoid_of_negated_(rz)
    np.add(rec[:, 2 * H :], bhn_k, out=hn_k)
    np.multiply(rz[:, :H], hn_k, out=tmp)
    n += tmp
    _sigmoid_of_negated_(n)
    n *= 2
    n -= 1
    # h = n + z (h_prev - n)
    np.subtract(h_prev, n, out=tmp)
    tmp *= z
    np.add(n, tmp, out=h)


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


CELLS = dict(zip(names.CELLS, (LSTM, GRU, RNN)))  # by config name


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
