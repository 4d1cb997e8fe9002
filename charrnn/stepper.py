"""One stream, one character at a time: the lean path behind `sample` and `poem` at batch size 1.

`CharRNN.step` + `sample.choose` serve any number of streams, and per character they build each
layer's parameter dict, allocate every temporary, enter np.errstate once per layer and copy and
validate the logits again. With one stream and small layers those calls, not the arithmetic,
are the cost. `OneStream` does the same arithmetic on buffers allocated once, from weights
scaled once, with layer 0's input rows computed once per id:

    stream = model.one_stream()          # the current parameters; None if step is overridden
    with np.errstate(over="ignore"):     # the caller's, once per generation (see OneStream.step)
        logits = stream.step(token)      # int -> (1, V), like model.step(np.array([token]), state)
        token = stream.draw(logits, rng, temperature, top_k, top_p, allowed)   # like choose

What it gives against the general path (tests/test_stepper.py checks every cell, input, head
and dtype): the draw is exactly choose's, the same id for the same logits and generator state.
Layer 0 and the head give the general step's bits: each operation is the general one with its
operands in the same order (or swapped, which IEEE addition and multiplication allow), or
differs from it only by a factor k in {1, -1, -2} (the gates' constants, cell_base.py):
multiplying by a power of two is exact, so x (Wh k) and (x Wh) k are the same bits, as are
x k + y k and (x + y) k. What would not be exact is left undone there: the LSTM and RNN biases
are not folded into the input rows, because the general step rounds ((x + h Wh) + b), not
((x + b) + h Wh) (the GRU's x-side bias is folded: there the general step adds it to x Wx
first); and an embedding's projection is computed row by row as the (1, E) @ (E, G) product
the general step computes, not as one (V, E) @ (E, G) GEMM, which may sum in another order.
(The one theoretical exception, far from any real weights: a product that underflows to a
subnormal can round differently once scaled by k.)

Where speed wins over bits: a layer above the first whose x Wx + h Wh, as one product over the
stacked weights, OpenBLAS splits over the cores while it runs each of the two on one core
(stack_pays: a 2 x 256 LSTM or GRU, a 2 x 512 vanilla RNN) makes that one product, and its one
sum over D + H terms rounds differently from the general step's two sums added. From such a
layer up the logits agree with the general step's to float rounding, not bit for bit, and a
sample is the general path's text unless a uniform falls within that rounding of a boundary
between two ids. Every other model (one layer, other sizes, one BLAS thread) gives the
general path's bits, and its text character for character.
"""

from __future__ import annotations

import math

import numpy as np

from .adaptive import AdaptiveHead
from .cores import blas_threads
from .gru import GRU
from .lstm import LSTM
from .rnn import RNN
from .sample import apply_mask, keep_nucleus, raise_non_finite

__all__ = ["OneStream"]


class _InputRows:
    """Layer 0's input contribution per id, computed on first use and kept: rows[v] (G,).

    Lazy, because with thousands of characters a whole (V, G) table would cost more than a short
    sample (a poem reads about 60 ids) and most rows would never be read; the dict grows only
    with the distinct ids seen. fold(x) turns the raw projection x (G,) or (1, G) into what the
    cell adds; it must return an array it owns or a view of the weights that is never written.
    """

    def __init__(self, Wx: np.ndarray, embed: np.ndarray | None, fold):
        # Wx (D, G): D = V (one-hot) or E (embed (V, E)); fold: (G,) or (1, G) -> (G,) or (1, G)
        self.Wx, self.embed, self.fold = Wx, embed, fold
        self.rows: dict[int, np.ndarray] = {}

    def fill(self, v: int) -> np.ndarray:
        """Compute, keep and return rows[v]; callers look in `rows` first."""
        if self.embed is None:
            x = self.Wx[v]                      # one-hot: the row gather of the general step
        else:
            # np.take gives a fresh aligned (1, E) like embed.W[ids] in CharRNN.step, so the
            # (1, E) @ (E, G) product below is the very call the general step makes.
            x = np.take(self.embed, [v], axis=0) @ self.Wx
        row = self.rows[v] = self.fold(x).reshape(-1)
        return row


# The layers below build their step as a closure over fixed buffers and views: a character
# then costs no attribute look-ups or slicing beyond the NumPy calls themselves, which at these
# sizes cost about as much as their arithmetic. step(x): x is an id (layer 0) or the layer
# below's h (1, H); it returns this layer's h (1, H), a buffer overwritten by the next step.
# Elementwise calls take 1-D views.

# np.dot, not np.matmul (the general step's @): for these shapes it makes the same BLAS call,
# bit for bit (tests/test_stepper.py), with about 0.4 µs less dispatch a call (Zen 4: 1.66
# against 2.10 µs at (1, 256) @ (256, 65)); 0.99x to 1.08x a character at H = 128 and 256.
add, multiply, subtract, dot = np.add, np.multiply, np.subtract, np.dot

# OpenBLAS (0.3.x, as NumPy's wheels ship it) runs a matrix-vector product of fewer than about
# 460,000 weights on one thread and splits larger ones over its threads (on a 2-core Xeon:
# 1024 x 448 float32 took 29 µs with one thread or two, 1024 x 480 31 µs and 14 µs).
_SPLIT_FROM = 460_000


def stack_pays(separate: tuple[int, ...], stacked: int, threads: int) -> bool:
    """Whether a layer's products, of `separate` weights each, should be one product over its
    stacked weights (`stacked` of them, zero blocks included), with OpenBLAS on `threads`
    threads: only where that one is split over the cores and the separate ones are not, so that
    each core reads its half of the weights from its own cache instead of one core reading them
    all (2 x 256 LSTM: 1.8x a character). Elsewhere stacking gains nothing and the GRU's zero
    blocks cost reads."""
    return threads > 1 and max(separate) < _SPLIT_FROM <= stacked


class _Stacked:
    """x Wx + h Wh as one product M [x; h] into a (G,), [x; h] one buffer xh (D + H,): project(x)
    copies the layer below's h (1, D) into its first D entries, and the layer writes its own h
    into h2 (1, H), a view of the rest. Its one sum over D + H terms rounds differently from
    the general step's two sums added (see the module docstring)."""

    def __init__(self, Wx: np.ndarray, Wh: np.ndarray, a: np.ndarray):
        # Wx (D, G), Wh (H, G), a (G,)
        D, H = Wx.shape[0], Wh.shape[0]
        M = np.ascontiguousarray(np.concatenate([Wx, Wh]).T)     # (G, D + H)
        xh = np.zeros(D + H, Wh.dtype)
        self.h2, x_part = xh[None, D:], xh[:D]

        def project(x):
            np.copyto(x_part, x[0])
            dot(M, xh, out=a)

        self.project = project


class _Input:
    """The product part of a layer's pre-activations, written into a (G,) by project(x), for
    the LSTM and the RNN: h Wh plus the cached row of id x in layer 0 (first, its _InputRows;
    Wx None), h Wh + x Wx above it, or _Stacked where that pays. Unstacked, the products take
    (1, n) arrays, as in the general step, so that BLAS runs the same kernel. h2 (1, H) is the
    layer's state h, which the layer's step overwrites in place. Wx (D, G) and Wh (H, G) are the
    weights as the layer uses them (scaled by k in the LSTM); threads: blas_threads()."""

    def __init__(self, Wx: np.ndarray | None, Wh: np.ndarray, first: _InputRows | None,
                 a: np.ndarray, threads: int):
        self.stacked = first is None and stack_pays((Wx.size, Wh.size), Wx.size + Wh.size, threads)
        if self.stacked:
            stacked = _Stacked(Wx, Wh, a)
            self.h2, self.project = stacked.h2, stacked.project
            return
        H, dt = Wh.shape[0], Wh.dtype
        self.h2 = h2 = np.zeros((1, H), dt)
        a2 = a[None]
        if first is not None:
            get, fill = first.rows.get, first.fill

            def project(x):
                dot(h2, Wh, out=a2)
                row = get(x)
                add(a, fill(x) if row is None else row, out=a)
        else:
            xw2 = np.empty_like(a2)
            xw = xw2[0]

            def project(x):
                dot(h2, Wh, out=a2)
                dot(x, Wx, out=xw2)
                add(a, xw, out=a)

        self.project = project


class _LSTM:
    """One LSTM layer. State: h (1, H), the _Input's h2, and c, which lives in gc[1]
    (gc (2, H) = g, c), so that g * i and c * f are one multiply by a[:2H] seen as (2, H) (i, f).

    a (4H,) holds k * pre-activations (LSTM.k), then the activations i, f, s, o in place.
    `ones` (4H,) stands in for the constant 1, which NumPy would convert on every call."""

    def __init__(self, cell: LSTM, p: dict, first: bool, embed: np.ndarray | None, threads: int):
        H, dt = cell.hidden_size, p["Wh"].dtype
        k = cell.k.astype(dt)                                    # (4H,)
        b_k = p["b"] * k                                          # (4H,)
        a = np.empty(4 * H, dt)
        rows = _InputRows(p["Wx"], embed, lambda x: x * k) if first else None
        inp = _Input(None if first else p["Wx"] * k, p["Wh"] * k, rows, a, threads)
        peep = cell.peephole
        if peep:
            pif_k = -np.stack([p["pi"], p["pf"]])                 # (2, H): k = -1 for i and f
            po_k = -p["po"]                                       # (H,)
        self.h2 = h2 = inp.h2
        self.stacked = inp.stacked  # above layer 0, where stack_pays
        project = inp.project
        self.gc = gc = np.zeros((2, H), dt)
        t, pc, ones = np.empty(H, dt), np.empty((2, H), dt), np.ones(4 * H, dt)
        h = h2[0]
        a_if = a[: 2 * H].reshape(2, H)
        a_sig, ones_sig = (a[: 3 * H], ones[: 3 * H]) if peep else (a, ones)
        s, o, g, c, ones_h = a[2 * H : 3 * H], a[3 * H :], gc[0], gc[1], ones[:H]

        def step(x):
            # General: ((x Wx + h Wh) + b) k. Here (h Wh k + x Wx k) + b k, the same bits
            # (stacked: the one sum M [x; h] in place of the first, see _Stacked).
            project(x)
            add(a, b_k, out=a)
            if peep:
                multiply(pif_k, c, out=pc)                        # the previous cell, before c moves
                add(a_if, pc, out=a_if)
            _sigmoid_of_negated(a_sig, ones_sig)
            add(s, s, out=g)                                      # g = tanh(a_g) = 2 s - 1
            subtract(g, ones_h, out=g)
            multiply(gc, a_if, out=gc)                            # g i, c f
            add(c, g, out=c)                                      # c' = f c + i g
            if peep:
                multiply(po_k, c, out=t)
                add(o, t, out=o)
                _sigmoid_of_negated(o, ones_h)
            np.tanh(c, out=t)
            multiply(o, t, out=h)
            return h2

        self.step = step

    def reset(self) -> None:
        self.h2.fill(0)
        self.gc.fill(0)


class _GRU:
    """One GRU layer. State: h (1, H), updated in place.

    pre holds the products. Unstacked, pre (3H,) = h Wh k, and the x side ax (3H,) =
    k (x Wx + bx + bh_rz): in layer 0 a row of the input table with the bias folded in (exact:
    the general step adds that bias to x Wx before anything else). Stacked (stack_pays),
    pre (4H,) = M [x; h] = k (x Wx_rz + h Wh_rz, x Wx_n, h Wh_n), from weights stacked with a
    zero (D, H) and a zero (H, H) block since n keeps its x and h parts apart, and the x-side
    bias added after. Either way the r, z part then holds the sigmoids and the last H entries
    h Wh_n + bh_n, in place (n's k is 1)."""

    def __init__(self, cell: GRU, p: dict, first: bool, embed: np.ndarray | None, threads: int):
        H, dt = cell.hidden_size, p["Wh"].dtype
        k, bias_x, bh_n = cell.scaled(p, dt)                     # (3H,), (3H,), (H,)
        Wh_k = p["Wh"] * k                                        # (H, 3H)
        D = p["Wx"].shape[0]
        self.stacked = stack = not first and stack_pays((D * 3 * H, H * 3 * H), (D + H) * 4 * H, threads)
        if not first:
            Wx_k = p["Wx"] * k                                    # (D, 3H)
            bx_k = bias_x * k                                     # (3H,)
        if stack:
            pre = np.empty(4 * H, dt)
            zeros_x, zeros_h = np.zeros((D, H), dt), np.zeros((H, H), dt)
            stacked = _Stacked(np.hstack([Wx_k, zeros_x]),
                               np.hstack([Wh_k[:, : 2 * H], zeros_h, Wh_k[:, 2 * H :]]), pre)
            self.h2 = h2 = stacked.h2
            project, x_side, xn = stacked.project, pre[: 3 * H], pre[2 * H : 3 * H]
        else:
            self.h2 = h2 = np.zeros((1, H), dt)
            rec2 = np.empty((1, 3 * H), dt)
            pre = rec2[0]
            if first:
                rows = _InputRows(p["Wx"], embed, lambda x: (x + bias_x) * k)
                get, fill = rows.rows.get, rows.fill
            else:
                ax2 = np.empty((1, 3 * H), dt)
                ax = ax2[0]
        n, t, ones = np.empty(H, dt), np.empty(H, dt), np.ones(2 * H, dt)
        h = h2[0]
        rz, r, z, hn = pre[: 2 * H], pre[:H], pre[H : 2 * H], pre[-H:]

        def update(xn):
            """From the summed r, z pre-activations, h Wh_n and the x side of n, xn (H,), to
            the new h."""
            _sigmoid_of_negated(rz, ones)
            add(hn, bh_n, out=hn)
            multiply(r, hn, out=n)
            add(xn, n, out=n)
            np.tanh(n, out=n)
            subtract(h, n, out=t)                                 # h' = n + z (h - n)
            multiply(t, z, out=t)
            add(n, t, out=h)
            return h2

        if stack:
            def step(x):
                project(x)
                add(x_side, bx_k, out=x_side)
                return update(xn)
        elif first:
            def step(x):
                ax = get(x)
                if ax is None:
                    ax = fill(x)
                dot(h2, Wh_k, out=rec2)
                add(rz, ax[: 2 * H], out=rz)
                return update(ax[2 * H :])
        else:
            def step(x):
                dot(x, Wx_k, out=ax2)
                add(ax, bx_k, out=ax)
                dot(h2, Wh_k, out=rec2)
                add(rz, ax[: 2 * H], out=rz)
                return update(ax[2 * H :])

        self.step = step

    def reset(self) -> None:
        self.h2.fill(0)


class _RNN:
    """One vanilla RNN layer. State: h (1, H), the _Input's h2, written from a (H,), the
    pre-activation."""

    def __init__(self, cell: RNN, p: dict, first: bool, embed: np.ndarray | None, threads: int):
        H, dt = cell.hidden_size, p["Wh"].dtype
        Wh, Wx, b = p["Wh"], p["Wx"], p["b"]                      # (H, H), (D, H), (H,)
        a = np.empty(H, dt)
        rows = _InputRows(Wx, embed, lambda x: x) if first else None
        inp = _Input(None if first else Wx, Wh, rows, a, threads)
        self.h2 = h2 = inp.h2
        self.stacked = inp.stacked  # above layer 0, where stack_pays
        project = inp.project
        h, zero = h2[0], np.zeros(H, dt)
        relu = cell.nonlinearity == "relu"

        def step(x):
            project(x)                                            # general: (x Wx + h Wh) + b
            add(a, b, out=a)
            if relu:
                np.maximum(a, zero, out=h)
            else:
                np.tanh(a, out=h)
            return h2

        self.step = step

    def reset(self) -> None:
        self.h2.fill(0)


_LAYERS = {LSTM: _LSTM, GRU: _GRU, RNN: _RNN}


class _FullHead:
    """run(h (1, H)) -> logits (1, V) = h W + b, into one buffer."""

    def __init__(self, params: dict, dt):
        W, b = params["head.W"], params["head.b"]                 # (H, V), (V,)
        self.out = out = np.empty((1, W.shape[1]), dt)
        out1 = out[0]

        def head(h2):
            dot(h2, W, out=out)
            add(out1, b, out=out1)
            return out

        self.run = head


class _AdaptiveHead:
    """run(h (1, H)) -> the (1, V) log-probabilities of AdaptiveHead.log_probs, in the model
    dtype, into buffers.

    A (1, n) row reduced over axis 1 and the same n values as a 1-D array are summed by the same
    pairwise loop, so the 1-D calls here give the general head's bits."""

    def __init__(self, head: AdaptiveHead, params: dict, dt):
        self.W, self.b = params["head.W"], params["head.b"]       # (H, c_0 + K), (c_0 + K,)
        self.c0, self.bounds, self.rank = head.shortlist, head.bounds, head.rank
        self.tails = [tuple(params[f"head.tail.{i}.{name}"] for name in "PWb") for i in range(head.clusters)]
        self.z2 = np.empty((1, self.W.shape[1]), dt)
        self.u2 = [np.empty((1, P.shape[1]), dt) for P, _, _ in self.tails]    # (1, d_i)
        self.zc2 = [np.empty((1, W.shape[1]), dt) for _, W, _ in self.tails]   # (1, size_i)
        self.e = np.empty(max(self.z2.shape[1], *(W.shape[1] for _, W, _ in self.tails)), dt)
        self.ranked = np.empty(head.V, dt)                        # columns by rank
        self.out = np.empty((1, head.V), dt)                      # columns by id

    def _log_softmax(self, z: np.ndarray) -> None:
        """In place: z (n,) -> z - max - log(sum(exp(z - max)))."""
        np.subtract(z, z.max(), out=z)
        e = self.e[: len(z)]
        np.exp(z, out=e)
        np.subtract(z, np.log(e.sum()), out=z)

    def run(self, h2: np.ndarray) -> np.ndarray:
        z2, c0, ranked, bounds = self.z2, self.c0, self.ranked, self.bounds
        z = z2[0]
        dot(h2, self.W, out=z2)
        np.add(z, self.b, out=z)
        self._log_softmax(z)
        ranked[:c0] = z[:c0]
        for i, (P, W, b) in enumerate(self.tails):
            u2, zc2 = self.u2[i], self.zc2[i]
            dot(h2, P, out=u2)
            dot(u2, W, out=zc2)
            zc = zc2[0]
            np.add(zc, b, out=zc)
            self._log_softmax(zc)
            np.add(zc, z[c0 + i], out=ranked[bounds[i] : bounds[i + 1]])
        np.take(ranked, self.rank, out=self.out[0])
        return self.out


class OneStream:
    """A CharRNN's step and `choose` for a single stream; see the module docstring.

    cells, params, embedding and adaptive are the model's (CharRNN.one_stream passes them). The
    weights are read when this is built: build one per generation, after any training.
    """

    def __init__(self, cells: list, params: dict, embedding: bool, adaptive: AdaptiveHead | None):
        dt = params["layers.0.Wh"].dtype
        threads = blas_threads()  # whether OpenBLAS can split a product over cores (stack_pays)
        self.layers = []
        for layer, cell in enumerate(cells):
            prefix = f"layers.{layer}."
            p = {key[len(prefix):]: value for key, value in params.items() if key.startswith(prefix)}
            embed = params["embed.W"] if embedding else None  # (V, E)
            self.layers.append(_LAYERS[type(cell)](cell, p, layer == 0, embed, threads))
        self.head = _AdaptiveHead(adaptive, params, dt) if adaptive else _FullHead(params, dt)
        self.vocab_size = self.head.out.shape[1]
        self.z = np.empty((1, self.vocab_size))                   # float64: draw's work buffer
        self._c = self.z[0]                                       # (V,) view of z
        self._top = np.empty(1)
        self._steps = [layer.step for layer in self.layers]
        self._head = self.head.run

    def reset(self) -> None:
        """Back to the zero state (model.init_state(1))."""
        for layer in self.layers:
            layer.reset()

    def step(self, token: int) -> np.ndarray:
        """Feed one id; returns the next logits (1, V) in the model dtype, as model.step does
        (log-probabilities with the adaptive head). The array is overwritten by the next step.

        Run under np.errstate(over="ignore"), held by the caller for a whole generation (the
        general cells enter it per call): exp(-a) = inf gives sigmoid(a) = 0, the exact limit.
        The flag only silences the warning; no value depends on it."""
        x = token
        for step in self._steps:
            x = step(x)
        return self._head(x)

    def draw(self, logits: np.ndarray, rng: np.random.Generator, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None,
             allowed: np.ndarray | None = None) -> int:
        """sample.choose for one row (logits (1, V), allowed None, (V,) or (1, V) bool): the
        same id for the same generator state, drawing the same single uniform (none when
        greedy). The options are not checked again; run under np.errstate(over="ignore").

        The general draw counts the entries of c / c[-1] that are <= u, c the cumulative sum.
        That set is a prefix (c never decreases, nor does rounding c_j / C), so a binary search
        for u * C finds its end up to rounding, and comparing c_j / C <= u itself, in the same
        float64 division, at the one or two ids next to it makes the count exact."""
        z, c, top = self.z, self._c, self._top
        np.copyto(z, logits)  # with the cast, cheaper than a subtraction that also converts
        if allowed is not None:
            apply_mask(z, allowed)
        np.maximum.reduce(c, out=top, keepdims=True)
        if not math.isfinite(top.item(0)):
            raise_non_finite(top)
        if temperature == 0:
            return int(c.argmax())
        subtract(c, top, out=c)
        if temperature != 1:
            np.divide(c, temperature, out=c)
        V = self.vocab_size
        if top_k is not None and top_k < V:
            kth = np.partition(z, V - top_k, axis=1)[:, V - top_k, None]
            z[z < kth] = -np.inf
        np.exp(c, out=c)
        if top_p is not None and top_p < 1:
            keep_nucleus(z, top_p)
        np.add.accumulate(c, out=c)                               # = np.cumsum, minus its wrapper
        total = c.item(-1)
        u = rng.random()
        i = int(c.searchsorted(u * total, side="right"))
        while i > 0 and c.item(i - 1) / total > u:
            i -= 1
        while c.item(i) / total <= u:  # ends: c[-1] / total is exactly 1 > u
            i += 1
        return i


def _sigmoid_of_negated(z: np.ndarray, ones: np.ndarray) -> None:
    """In place: z (n,) = -a becomes sigmoid(a) = 1 / (1 + exp(-a)), cell_base.sigmoid_of_negated_
    with a 1-D ones (n,) for the 1, which NumPy would otherwise convert on every call."""
    np.exp(z, out=z)
    np.add(z, ones, out=z)
    np.reciprocal(z, out=z)
