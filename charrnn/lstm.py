"""The LSTM, fast: see cell_base.py for the contract shared by the cells, reference.py for the
same equations written one timestep at a time for reading.

Speed: the input projection of all T steps is one GEMM (or row gather) before the time loop
and the weight gradients are one GEMM each after it, so only h @ Wh and a few in-place
elementwise calls remain per timestep. The pre-activations are kept multiplied by a per-column
constant k, so that the whole gate block, g inside it included, turns into activations with one
exp, one add and one reciprocal: sigmoid(a) = 1 / (1 + exp(-a)) (k = -1) and
tanh(a) = 2 sigmoid(2a) - 1 (k = -2), where i, f and o apart from g would take three passes of
their own and a tanh a fourth. The backward pass derives each step's local derivatives
in cache from the stored activations instead of precomputing them over all T in full-size
temporaries. The time loops of forward and backward hold each timestep as columns, (4H, B) and
(H, B), so that every gate is one contiguous block (a_t = Wh^T h_{t-1} + ...); a window is
transposed once on the way in and once on the way out. The elementwise part of a step is one
function shared by forward (columns) and step (rows).
"""

from __future__ import annotations

import numpy as np

from .cell_base import Cell, columns, input_grads, is_ids, project, sigmoid_of_negated_, transposed


class LSTM(Cell):
    """Long short-term memory, gates packed in PyTorch's order i, f, g, o.

        a = x Wx + h Wh + b                      Wx (D, 4H), Wh (H, 4H), b (4H,)
        i, f, o = sigmoid(a_i, a_f, a_o)         g = tanh(a_g)
        c' = f * c + i * g                       h' = o * tanh(c')

    With peepholes (Gers & Schmidhuber 2000) the gates also see the cell through per-unit
    weights pi, pf, po (H,): a_i += pi * c, a_f += pf * c (previous cell), a_o += po * c' (new cell).
    """

    state_names = ("h", "c")

    def __init__(self, input_size: int, hidden_size: int, peephole: bool = False):
        super().__init__(input_size, hidden_size)
        self.peephole = peephole
        H = hidden_size
        # Pre-activations are kept multiplied by k so that one exp call per step serves the whole
        # gate block: sigmoid(a) = 1 / (1 + exp(-a)) and tanh(a) = 2 sigmoid(2a) - 1.
        self.k = np.r_[np.full(2 * H, -1.0), np.full(H, -2.0), np.full(H, -1.0)]

    def shapes(self) -> dict[str, tuple[int, ...]]:
        D, H = self.input_size, self.hidden_size
        shapes = {"Wx": (D, 4 * H), "Wh": (H, 4 * H), "b": (4 * H,)}
        if self.peephole:
            shapes.update(pi=(H,), pf=(H,), po=(H,))
        return shapes

    def init_params(self, rng: np.random.Generator, dtype=np.float32) -> dict:
        p = super().init_params(rng, dtype)
        H = self.hidden_size
        # A forget bias of 1 keeps the cell's memory open early in training.
        p["b"][H : 2 * H] = 1.0
        return p

    def forward(self, p: dict, x: np.ndarray, state: tuple):
        h0, c0 = state
        T, B = x.shape[:2]
        H = self.hidden_size
        dt = p["Wh"].dtype
        k = self.k.astype(dt)

        # The time loop works on columns: gates[t] (4H, B) holds k * pre-activations, then in
        # place the activations i, f, s, o with s = sigmoid(2 a_g), so that all four are sigmoids
        # and g = 2 s - 1. Each gate is then one contiguous (H, B) block, which the elementwise
        # calls go through faster than the strided column slices of a (B, 4H) row layout.
        gates = columns(project(x, p["Wx"], p["b"], k))
        WhT_k = transposed(p["Wh"], k)  # (4H, H): a_t += WhT_k h_{t-1}
        hbuf = np.empty((T + 1, H, B), dtype=dt)  # hbuf[0] = h0, hbuf[t+1] = h_t, as columns
        # mult[t] (4, H, B) holds what each gate's derivative is multiplied by in the backward
        # pass: g, c_{t-1}, 4 i (dg/da_g = 4 s (1 - s)) and tanh(c_t). The cell state c_t itself
        # lives in mult[t+1, 1], where step t+1 needs it.
        mult = np.empty((T + 1, 4, H, B), dtype=dt)
        hbuf[0], mult[0, 1] = h0.T, c0.T
        rec = np.empty((4 * H, B), dtype=dt)
        tmp = np.empty((H, B), dtype=dt)
        peep = self._peepholes(p, as_columns=True)

        with np.errstate(over="ignore"):  # exp(-a) = inf gives sigmoid(a) = 0, the exact limit
            for t in range(T):
                a = gates[t]
                np.matmul(WhT_k, hbuf[t], out=rec)
                a += rec
                m = mult[t]
                _lstm_update(a.reshape(4, H, B), m[1], m[0], mult[t + 1, 1], m[3], hbuf[t + 1], tmp, peep)
                np.multiply(a[:H], 4, out=m[2])

        hs = columns(hbuf)  # (T+1, B, H): h_0 ... h_T as rows again
        cache = (x, gates, hbuf, hs, mult)
        return hs[1:], (hs[T].copy(), mult[T, 1].T.copy()), cache

    def backward(self, p: dict, dhs: np.ndarray, dstate, cache):
        x, gates, hbuf, hs, mult = cache
        T, B, H = dhs.shape
        dt = gates.dtype
        Wh = p["Wh"]  # (H, 4H): dh_{t-1} = Wh dA_t in the column layout
        dhs = columns(dhs)  # (T, H, B)
        dA = np.empty((T, 4 * H, B), dtype=dt)  # gradient of the loss w.r.t. the pre-activations
        # dh_rec: the gradient reaching h_t through Wh h_t (from step t+1), or dstate at t = T-1.
        if dstate is None:
            dh_rec, dc_next = np.zeros((H, B), dt), np.zeros((H, B), dt)
        else:
            dh_rec, dc_next = dstate[0].T.astype(dt, order="C"), dstate[1].T.astype(dt, order="C")
        dh = np.empty((H, B), dtype=dt)
        dc = np.empty((H, B), dtype=dt)
        tmp = np.empty((H, B), dtype=dt)
        if self.peephole:
            pi, pf, po = (p[name][:, None] for name in ("pi", "pf", "po"))

        for t in range(T - 1, -1, -1):
            np.add(dhs[t], dh_rec, out=dh)
            a = gates[t]
            d = dA[t]
            d4 = d.reshape(4, H, B)
            # Every gate is a sigmoid s here (g through s = sigmoid(2 a_g)): s' = s (1 - s).
            np.multiply(a, a, out=d)
            np.subtract(a, d, out=d)
            d4 *= mult[t]
            o, tanh_c = a[3 * H :], mult[t, 3]
            d4[3] *= dh  # d a_o
            # dc = dh * o * (1 - tanh(c)^2) + dc_next, with o tanh(c)^2 = h tanh(c).
            np.multiply(hbuf[t + 1], tanh_c, out=tmp)
            np.subtract(o, tmp, out=tmp)
            tmp *= dh
            np.add(tmp, dc_next, out=dc)
            if self.peephole:
                np.multiply(d4[3], po, out=tmp)
                dc += tmp
            d4[:3] *= dc  # d a_i, d a_f, d a_g
            np.multiply(dc, a[H : 2 * H], out=dc_next)
            if self.peephole:
                np.multiply(d4[0], pi, out=tmp)
                dc_next += tmp
                np.multiply(d4[1], pf, out=tmp)
                dc_next += tmp
            np.matmul(Wh, d, out=dh_rec)

        dA_rows = columns(dA)  # (T, B, 4H)
        dA_flat = dA_rows.reshape(T * B, 4 * H)
        dx, dWx = input_grads(x, p["Wx"], dA_rows)
        grads = {
            "Wx": dWx,
            "Wh": hs[:-1].reshape(T * B, H).T @ dA_flat,
            "b": dA_flat.sum(axis=0),
        }
        if self.peephole:
            d4 = dA.reshape(T, 4, H, B)
            cells = mult[:, 1]  # c_0 ... c_T, (T+1, H, B)
            grads["pi"] = np.einsum("thb,thb->h", d4[:, 0], cells[:-1])
            grads["pf"] = np.einsum("thb,thb->h", d4[:, 1], cells[:-1])
            grads["po"] = np.einsum("thb,thb->h", d4[:, 3], cells[1:])
        return dx, (dh_rec.T.copy(), dc_next.T.copy()), grads

    def step(self, p: dict, x: np.ndarray, state: tuple):
        h, c = state
        B, H = h.shape
        a = np.take(p["Wx"], x, axis=0) if is_ids(x) else x @ p["Wx"]
        a += h @ p["Wh"]
        a += p["b"]
        a *= self.k.astype(a.dtype)
        g, c_new, tanh_c, h_new, tmp = np.empty((5, B, H), dtype=a.dtype)
        with np.errstate(over="ignore"):
            _lstm_update(a.reshape(B, 4, H).transpose(1, 0, 2), c, g, c_new, tanh_c, h_new, tmp,
                         self._peepholes(p, as_columns=False))
        return h_new, (h_new, c_new)

    def _peepholes(self, p: dict, as_columns: bool):
        """None, or the peephole weights scaled by k like the gates they feed, shaped to broadcast
        over the cell state: (pi, pf) (2, H, 1) and po (H, 1) when it is (H, B) columns,
        (2, 1, H) and (H,) when it is (B, H) rows."""
        if not self.peephole:
            return None
        pi_pf, po = -np.stack([p["pi"], p["pf"]]), -p["po"]
        if as_columns:
            return pi_pf[:, :, None], po[:, None]
        return pi_pf[:, None, :], po


def _lstm_update(a4, c_prev, g, c, tanh_c, h, tmp, peep) -> None:
    """The elementwise part of one LSTM step, in place; run under np.errstate(over="ignore").

    a4 (4, ...): the gate blocks i, f, g, o of k * pre-activations (see LSTM.k), each shaped like
    the cell state, (H, B) columns or (B, H) rows; overwritten with the activations i, f, s, o
    where s = sigmoid(2 a_g). c_prev: the previous cell. Writes g = 2 s - 1, the new cell c,
    tanh(c) and h, each shaped like c_prev; tmp is scratch. peep: LSTM._peepholes(p, as_columns).
    """
    i, f, s, o = a4
    if peep is None:
        sigmoid_of_negated_(a4)
    else:
        a4[:2] += peep[0] * c_prev
        sigmoid_of_negated_(a4[:3])
    np.multiply(s, 2, out=g)
    g -= 1
    np.multiply(f, c_prev, out=c)
    np.multiply(i, g, out=tmp)
    c += tmp
    if peep is not None:
        np.multiply(peep[1], c, out=tmp)
        o += tmp
        sigmoid_of_negated_(o)
    np.tanh(c, out=tanh_c)
    np.multiply(o, tanh_c, out=h)
