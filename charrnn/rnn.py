"""The vanilla RNN, fast; reference.py has the same equations one timestep at a time."""

from __future__ import annotations

import numpy as np

from .cell_base import Cell, input_grads, is_ids, project, transposed


class RNN(Cell):
    """Vanilla (Elman) RNN: h' = tanh(x Wx + h Wh + b), or ReLU in place of tanh.

    Wx (D, H), Wh (H, H), b (H,).
    """

    def __init__(self, input_size: int, hidden_size: int, nonlinearity: str = "tanh"):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', not {nonlinearity!r}")
        super().__init__(input_size, hidden_size)
        self.nonlinearity = nonlinearity

    def shapes(self) -> dict[str, tuple[int, ...]]:
        D, H = self.input_size, self.hidden_size
        return {"Wx": (D, H), "Wh": (H, H), "b": (H,)}

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
        pre = project(x, p["Wx"], p["b"])
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
        WhT = transposed(p["Wh"])
        rec = np.empty((B, H), dtype=dhs.dtype)
        for t in range(T - 1, -1, -1):
            np.multiply(dh_total[t], slope[t], out=dA[t])
            np.matmul(dA[t], WhT, out=rec)
            if t > 0:
                dh_total[t - 1] += rec
        dA_flat = dA.reshape(T * B, H)
        dx, dWx = input_grads(x, p["Wx"], dA)
        grads = {
            "Wx": dWx,
            "Wh": hbuf[:-1].reshape(T * B, H).T @ dA_flat,
            "b": dA_flat.sum(axis=0),
        }
        return dx, (rec.copy(),), grads

    def step(self, p: dict, x: np.ndarray, state: tuple):
        (h,) = state
        a = (p["Wx"][x] if is_ids(x) else x @ p["Wx"]) + h @ p["Wh"] + p["b"]
        self._activate(a)
        return a, (a,)
