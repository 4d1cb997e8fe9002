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

It gives exactly the logits, bit for bit, and the draws of the general path for the same
generator state (tests/test_stepper.py compares them for every cell, input, head and dtype).
Each operation below is the general one with its operands in the same order (or swapped, which
IEEE addition and multiplication allow), or differs from it only by a factor k in {-1, -2} (the
gates' constants, cell_base.py): multiplying by a power of two is exact, so x (Wh k) and
(x Wh) k are the same bits, as are x k + y k and (x + y) k. What would not be exact is left
undone: the LSTM and RNN biases are not folded into the input rows, because the general step
rounds ((x + h Wh) + b), not ((x + b) + h Wh) (the GRU's x-side bias is folded: there the
general step adds it to x Wx first); and an embedding's projection is computed row by row as
the (1, E) @ (E, G) product the general step computes, not as one (V, E) @ (E, G) GEMM, which
may sum in another order. (The one theoretical exception, far from any real weights: a product
that underflows to a subnormal can round differently once scaled by k.)

Matrix products take (1, n) arrays, as in the general step, so that BLAS runs the same kernel;
elementwise calls take 1-D views of them, which NumPy runs at about half the cost of a (1, n)
array meeting a broadcast (n,) operand.
"""

from __future__ import annotations

import math

import numpy as np

from .adaptive import AdaptiveHead
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
# Matrix products take (1, n) arrays, elementwise calls their 1-D views.

add, multiply, subtract, matmul = np.add, np.multiply, np.subtract, np.matmul


def _input_and_recurrent(x, h2, Wh, Wx, rows, fill, out2, spare2) -> None:
    """out2 (1, G) = h2 Wh + the input's part: the cached row of id x in layer 0 (rows, fill),
    the product x Wx above it (spare2 (1, G) its buffer). The general step adds the same two
    terms in the other order, which IEEE addition gives the same bits."""
    matmul(h2, Wh, out=out2)
    out = out2[0]
    if rows is not None:
        row = rows.get(x)
        add(out, fill(x) if row is None else row, out=out)
    else:
        matmul(x, Wx, out=spare2)
        add(out, spare2[0], out=out)


def _first_rows(first: _InputRows | None):
    """(rows dict, fill) of layer 0's input rows, or (None, None) above it."""
    return (first.rows, first.fill) if first is not None else (None, None)


class _LSTM:
    """One LSTM layer. State: h (1, H) and c, which lives in gc[1] (gc (2, H) = g, c), so that
    g * i and c * f are one multiply by a[:2H] seen as (2, H) (i, f).

    a (1, 4H) holds k * pre-activations (LSTM.k), then the activations i, f, s, o in place.
    `ones` (4H,) stands in for the constant 1, which NumPy would convert on every call."""

    def __init__(self, cell: LSTM, p: dict, first: bool, embed: np.ndarray | None):
        H, dt = cell.hidden_size, p["Wh"].dtype
        k = cell.k.astype(dt)                                    # (4H,)
        Wh_k = p["Wh"] * k                                        # (H, 4H)
        b_k = p["b"] * k                                          # (4H,)
        Wx_k = None if first else p["Wx"] * k                     # (H, 4H)
        rows, fill = _first_rows(_InputRows(p["Wx"], embed, lambda x: x * k) if first else None)
        peep = cell.peephole
        if peep:
            pif_k = -np.stack([p["pi"], p["pf"]])                 # (2, H): k = -1 for i and f
            po_k = -p["po"]                                       # (H,)
        self.h2 = h2 = np.zeros((1, H), dt)
        self.gc = gc = np.zeros((2, H), dt)
        a2, rec2 = np.empty((1, 4 * H), dt), np.empty((1, 4 * H), dt)
        t, pc, ones = np.empty(H, dt), np.empty((2, H), dt), np.ones(4 * H, dt)
        a, h = a2[0], h2[0]
        a_if = a[: 2 * H].reshape(2, H)
        a_sig, ones_sig = (a[: 3 * H], ones[: 3 * H]) if peep else (a, ones)
        s, o, g, c, ones_h = a[2 * H : 3 * H], a[3 * H :], gc[0], gc[1], ones[:H]

        def step(x):
            # General: ((x Wx + h Wh) + b) k. Here (h Wh k + x Wx k) + b k: the same bits.
            _input_and_recurrent(x, h2, Wh_k, Wx_k, rows, fill, a2, rec2)
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

    rec (1, 3H) holds h Wh k, then r, z (sigmoids) and k_n (h Wh_n + bh_n) in place; the x side
    (3H,) is k (x Wx + bx + bh_rz), for layer 0 a row of the input table with the bias folded
    in (here folding is exact: the general step adds that bias to x Wx before anything else)."""

    def __init__(self, cell: GRU, p: dict, first: bool, embed: np.ndarray | None):
        H, dt = cell.hidden_size, p["Wh"].dtype
        k, bias_x, bhn_k = cell.scaled(p, dt)                    # (3H,), (3H,), (H,)
        Wh_k = p["Wh"] * k                                        # (H, 3H)
        rows, fill = _first_rows(_InputRows(p["Wx"], embed, lambda x: (x + bias_x) * k) if first else None)
        if not first:
            Wx_k = p["Wx"] * k                                    # (H, 3H)
            bx_k = bias_x * k                                     # (3H,)
        self.h2 = h2 = np.zeros((1, H), dt)
        ax2, rec2 = np.empty((1, 3 * H), dt), np.empty((1, 3 * H), dt)
        n, t, ones = np.empty(H, dt), np.empty(H, dt), np.ones(2 * H, dt)
        rec, h, ones_h = rec2[0], h2[0], ones[:H]
        rz, r, z, hn = rec[: 2 * H], rec[:H], rec[H : 2 * H], rec[2 * H :]

        def step(x):
            if rows is not None:
                ax = rows.get(x)
                if ax is None:
                    ax = fill(x)
            else:
                matmul(x, Wx_k, out=ax2)
                ax = ax2[0]
                add(ax, bx_k, out=ax)
            matmul(h2, Wh_k, out=rec2)
            add(rz, ax[: 2 * H], out=rz)
            _sigmoid_of_negated(rz, ones)
            add(hn, bhn_k, out=hn)
            multiply(r, hn, out=n)
            add(ax[2 * H :], n, out=n)
            _sigmoid_of_negated(n, ones_h)
            add(n, n, out=n)                                      # n = tanh(...) = 2 s - 1
            subtract(n, ones_h, out=n)
            subtract(h, n, out=t)                                 # h' = n + z (h - n)
            multiply(t, z, out=t)
            add(n, t, out=h)
            return h2

        self.step = step

    def reset(self) -> None:
        self.h2.fill(0)


class _RNN:
    """One vanilla RNN layer. State: h (1, H), in one of two buffers that swap, since h' is
    computed from h Wh into a buffer of its own."""

    def __init__(self, cell: RNN, p: dict, first: bool, embed: np.ndarray | None):
        H, dt = cell.hidden_size, p["Wh"].dtype
        Wh, Wx, b = p["Wh"], p["Wx"], p["b"]                      # (H, H), (D, H), (H,)
        rows, fill = _first_rows(_InputRows(Wx, embed, lambda x: x) if first else None)
        relu = cell.nonlinearity == "relu"
        buffers = [np.zeros((1, H), dt), np.zeros((1, H), dt)]   # [h, spare]
        self.buffers = buffers
        xw2, zero = np.empty((1, H), dt), np.zeros(H, dt)

        def step(x):
            h2, a2 = buffers
            a = a2[0]
            _input_and_recurrent(x, h2, Wh, Wx, rows, fill, a2, xw2)  # general: (x Wx + h Wh) + b
            add(a, b, out=a)
            if relu:
                np.maximum(a, zero, out=a)
            else:
                np.tanh(a, out=a)
            buffers.reverse()
            return a2

        self.step = step

    def reset(self) -> None:
        self.buffers[0].fill(0)


_LAYERS = {LSTM: _LSTM, GRU: _GRU, RNN: _RNN}


class _FullHead:
    """run(h (1, H)) -> logits (1, V) = h W + b, into one buffer."""

    def __init__(self, params: dict, dt):
        W, b = params["head.W"], params["head.b"]                 # (H, V), (V,)
        self.out = out = np.empty((1, W.shape[1]), dt)
        out1 = out[0]

        def head(h2):
            matmul(h2, W, out=out)
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
        np.matmul(h2, self.W, out=z2)
        np.add(z, self.b, out=z)
        self._log_softmax(z)
        ranked[:c0] = z[:c0]
        for i, (P, W, b) in enumerate(self.tails):
            u2, zc2 = self.u2[i], self.zc2[i]
            np.matmul(h2, P, out=u2)
            np.matmul(u2, W, out=zc2)
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
        self.layers = []
        for layer, cell in enumerate(cells):
            prefix = f"layers.{layer}."
            p = {key[len(prefix):]: value for key, value in params.items() if key.startswith(prefix)}
            embed = params["embed.W"] if embedding else None  # (V, E)
            self.layers.append(_LAYERS[type(cell)](cell, p, layer == 0, embed))
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
