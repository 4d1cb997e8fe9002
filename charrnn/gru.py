"""The GRU, fast, with the LSTM's exp-based sigmoid for r and z (lstm.py says why) and tanh for
n; reference.py has the same equations one timestep at a time for reading."""

from __future__ import annotations

import numpy as np

from .cell_base import Cell, columns, input_grads, is_ids, project, sigmoid_of_negated_, transposed


class GRU(Cell):
    """Gated recurrent unit in PyTorch's form, gates packed r, z, n.

        r = sigmoid(x Wx_r + bx_r + h Wh_r + bh_r)         Wx (D, 3H), Wh (H, 3H)
        z = sigmoid(x Wx_z + bx_z + h Wh_z + bh_z)         bx, bh (3H,)
        n = tanh(x Wx_n + bx_n + r * (h Wh_n + bh_n))
        h' = (1 - z) * n + z * h
    """

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__(input_size, hidden_size)
        H = hidden_size
        # As in the LSTM, r's and z's pre-activations times k = -1, so that sigmoid(a) =
        # 1 / (1 + exp(-a)) is one exp, one add and one reciprocal. n's keep k = 1 and go to
        # np.tanh: unlike the LSTM's g, n is computed apart from the other gates (it needs r),
        # and there one tanh call costs less than 2 sigmoid(2a) - 1 in five (0.4 against 2.7 µs
        # at H = 256, 6.3 against 16.3 µs at 256 x 64, float32, Zen 4).
        self.k = np.r_[np.full(2 * H, -1.0), np.ones(H)]

    def shapes(self) -> dict[str, tuple[int, ...]]:
        D, H = self.input_size, self.hidden_size
        return {"Wx": (D, 3 * H), "Wh": (H, 3 * H), "bx": (3 * H,), "bh": (3 * H,)}

    def scaled(self, p: dict, dt):
        """k (3H,); the x-side bias (3H,), with bh of r and z folded in (they only ever add), not
        yet scaled; and bh_n (H,), added apart inside r * (...) (its k is 1)."""
        H = self.hidden_size
        k = self.k.astype(dt)
        bias_x = p["bx"].copy()
        bias_x[: 2 * H] += p["bh"][: 2 * H]
        return k, bias_x, p["bh"][2 * H :]

    def forward(self, p: dict, x: np.ndarray, state: tuple):
        (h0,) = state
        T, B = x.shape[:2]
        H = self.hidden_size
        dt = p["Wh"].dtype
        k, bias_x, bh_n = self.scaled(p, dt)

        # gates[t] (3H, B): x-side pre-activations times k, as columns (lstm.py says why),
        # overwritten in place by r, z, n.
        gates = columns(project(x, p["Wx"], bias_x, k))
        WhT_k = transposed(p["Wh"], k)  # (3H, H)
        bh_n = bh_n[:, None]
        hn = np.empty((T, H, B), dtype=dt)  # Wh_n h + bh_n, kept for the backward pass
        hbuf = np.empty((T + 1, H, B), dtype=dt)
        hbuf[0] = h0.T
        rec = np.empty((3 * H, B), dtype=dt)
        tmp = np.empty((H, B), dtype=dt)
        with np.errstate(over="ignore"):
            for t in range(T):
                np.matmul(WhT_k, hbuf[t], out=rec)
                _gru_update(gates[t].reshape(3, H, B), rec.reshape(3, H, B), bh_n, hbuf[t],
                            hn[t], hbuf[t + 1], tmp)

        hs = columns(hbuf)  # (T+1, B, H): h_0 ... h_T as rows again
        cache = (x, gates, hn, hbuf, hs)
        return hs[1:], (hs[T].copy(),), cache

    def backward(self, p: dict, dhs: np.ndarray, dstate, cache):
        x, gates, hn, hbuf, hs = cache
        T, B, H = dhs.shape
        dt = gates.dtype
        dhs = columns(dhs)  # (T, H, B)
        dAx = np.empty((T, 3 * H, B), dtype=dt)  # d loss / d (x Wx + bx), gates r, z, n
        dAh = np.empty((T, 3 * H, B), dtype=dt)  # d loss / d (h Wh + bh): differs in n only
        Wh = p["Wh"]  # (H, 3H): dh_{t-1} = Wh dAh_t in the column layout
        dh_rec = np.zeros((H, B), dt) if dstate is None else dstate[0].T.astype(dt, order="C")
        dh = np.empty((H, B), dtype=dt)
        z_dh = np.empty((H, B), dtype=dt)
        tmp = np.empty((H, B), dtype=dt)

        for t in range(T - 1, -1, -1):
            np.add(dhs[t], dh_rec, out=dh)
            g3, dx3, dh3 = gates[t], dAx[t], dAh[t]
            r, z, n = g3[:H], g3[H : 2 * H], g3[2 * H :]
            d_rz, da_r, da_z, da_n = dx3[: 2 * H], dx3[:H], dx3[H : 2 * H], dx3[2 * H :]
            np.multiply(g3[: 2 * H], g3[: 2 * H], out=d_rz)
            np.subtract(g3[: 2 * H], d_rz, out=d_rz)  # r (1 - r), z (1 - z)
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
            # d a_r = d a_n (Wh_n h + bh_n) r (1 - r)
            np.multiply(da_n, hn[t], out=tmp)
            da_r *= tmp
            np.copyto(dh3[: 2 * H], d_rz)
            np.multiply(da_n, r, out=dh3[2 * H :])
            np.matmul(Wh, dh3, out=dh_rec)
            dh_rec += z_dh

        dAx_rows, dAh_rows = columns(dAx), columns(dAh)  # (T, B, 3H)
        dAh_flat = dAh_rows.reshape(T * B, 3 * H)
        dx, dWx = input_grads(x, p["Wx"], dAx_rows)
        grads = {
            "Wx": dWx,
            "Wh": hs[:-1].reshape(T * B, H).T @ dAh_flat,
            "bx": dAx_rows.reshape(T * B, 3 * H).sum(axis=0),
            "bh": dAh_flat.sum(axis=0),
        }
        return dx, (dh_rec.T.copy(),), grads

    def step(self, p: dict, x: np.ndarray, state: tuple):
        (h,) = state
        B, H = h.shape
        dt = h.dtype
        k, bias_x, bh_n = self.scaled(p, dt)
        ax = np.take(p["Wx"], x, axis=0) if is_ids(x) else x @ p["Wx"]
        ax += bias_x
        ax *= k
        rec = h @ p["Wh"]
        rec *= k  # exact (k is -1 or 1), and cheaper per sampled character than scaling Wh
        hn, h_new, tmp = np.empty((3, B, H), dtype=dt)
        with np.errstate(over="ignore"):
            _gru_update(ax.reshape(B, 3, H).transpose(1, 0, 2), rec.reshape(B, 3, H).transpose(1, 0, 2),
                        bh_n, h, hn, h_new, tmp)
        return h_new, (h_new,)


def _gru_update(g3, rec, bh_n, h_prev, hn, h, tmp) -> None:
    """The elementwise part of one GRU step, in place; run under np.errstate(over="ignore").

    g3 (3, ...): the gate blocks r, z, n of k * x-side pre-activations (see GRU.scaled), each
    shaped like the state, (H, B) columns or (B, H) rows; overwritten with r, z, n.
    rec (3, ...): the same blocks of k * Wh h_prev. bh_n broadcasts over the state ((H, 1) for
    columns, (H,) for rows). Writes hn = Wh_n h + bh_n and the new h, each shaped like h_prev;
    tmp is scratch.
    """
    rz, z, n = g3[:2], g3[1], g3[2]
    rz += rec[:2]
    sigmoid_of_negated_(rz)
    np.add(rec[2], bh_n, out=hn)
    np.multiply(rz[0], hn, out=tmp)
    n += tmp
    np.tanh(n, out=n)
    # h = n + z (h_prev - n)
    np.subtract(h_prev, n, out=tmp)
    tmp *= z
    np.add(n, tmp, out=h)
