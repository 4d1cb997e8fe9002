"""The lean paths behind `sample` and `poem`: OneStream for one stream, Streams for several.

`CharRNN.step` + `sample.choose` serve any number of streams, and per character they build each
layer's parameter dict, allocate every temporary, enter np.errstate once per layer and copy and
validate the logits again. With one stream and small layers those calls, not the arithmetic,
are the cost. `OneStream` does the same arithmetic on buffers allocated once, from weights
scaled once, with layer 0's input rows computed once per id:

    stream = model.one_stream()          # the current parameters; None if step is overridden
    with np.errstate(over="ignore"):     # the caller's, once per generation (see OneStream.step)
        logits = stream.step(token)      # int -> (1, V), like model.step(np.array([token]), state)
        token = stream.draw(logits, rng, temperature, top_k, top_p, allowed)   # like choose

`Streams` (model.streams(B)) runs the same layers with B rows for `--num-samples` and `poem`'s
batches: step(ids (B,)) -> (B, V), drawn from with `choose`.

Both give exactly the logits, bit for bit, and OneStream the draws, of the general path for the
same generator state (tests/test_stepper.py compares them for every cell, input, head and dtype).
Each operation below is the general one with its operands in the same order (or swapped, which
IEEE addition and multiplication allow), or differs from it only by a factor k in {-1, -2} (the
gates' constants, cell_base.py): multiplying by a power of two is exact, so x (Wh k) and
(x Wh) k are the same bits, as are x k + y k and (x + y) k. What would not be exact is left
undone: the LSTM and RNN biases are not folded into the input rows, because the general step
rounds ((x + h Wh) + b), not ((x + b) + h Wh) (the GRU's x-side bias is folded: there the
general step adds it to x Wx first); and an embedding's projection is computed as the (B, E) @
(E, G) product the general step computes, not as one (V, E) @ (E, G) GEMM, which may sum in
another order. (The one theoretical exception, far from any real weights: a product that
underflows to a subnormal can round differently once scaled by k.)

Matrix products take (B, n) arrays, as in the general step, so that BLAS runs the same kernel.
With one stream the elementwise calls take 1-D views of them, which NumPy runs at about half the
cost of a (1, n) array meeting a broadcast (n,) operand; with B rows, constants are repeated on
B rows for the same reason (_per_row).
"""

from __future__ import annotations

import math

import numpy as np

from .adaptive import AdaptiveHead
from .gru import GRU
from .lstm import LSTM
from .rnn import RNN
from .sample import apply_mask, keep_nucleus, raise_non_finite

__all__ = ["OneStream", "Streams"]


class _InputRows:
    """Layer 0's input contribution for one stream, per id, computed on first use and kept:
    rows[v] (G,).

    Lazy, because with thousands of characters a whole (V, G) table would cost more than a short
    sample (a poem reads about 60 ids) and most rows would never be read; the dict grows only
    with the distinct ids seen. fold_ turns the raw projection (G,) in place into what the cell
    adds.
    """

    def __init__(self, Wx: np.ndarray, embed: np.ndarray | None, fold_):
        # Wx (D, G): D = V (one-hot) or E (embed (V, E)); fold_: (G,) -> None, in place
        self.Wx, self.embed, self.fold_ = Wx, embed, fold_
        self.rows: dict[int, np.ndarray] = {}
        rows = self.rows

        def get(v: int) -> np.ndarray:
            row = rows.get(v)
            return self._fill(v) if row is None else row

        self.get = get

    def _fill(self, v: int) -> np.ndarray:
        if self.embed is None:
            x = self.Wx[v].copy()               # one-hot: the row gather of the general step
        else:
            # np.take gives a fresh aligned (1, E) like embed.W[ids] in CharRNN.step, so the
            # (1, E) @ (E, G) product below is the very call the general step makes.
            x = np.take(self.embed, [v], axis=0) @ self.Wx
        row = self.rows[v] = x.reshape(-1)
        self.fold_(row)
        return row


class _InputGather:
    """Layer 0's input contribution for B streams: get(ids (B,)) -> (B, G), into one buffer.

    The general step's gather (one-hot) or (B, E) @ (E, G) product (embedding), then fold_ in
    place; a table of every id scaled once would cost a copy of Wx, which with thousands of
    characters is the model's largest matrix. The ids are the model's own (a draw or the
    vocabulary's), so np.take runs with mode="clip": with the default "raise" and `out`, NumPy
    gathers into a temporary and copies it (about 2.5x the time of the gather)."""

    def __init__(self, Wx: np.ndarray, embed: np.ndarray | None, fold_, batch: int):
        out = np.empty((batch, Wx.shape[1]), Wx.dtype)            # (B, G)
        if embed is None:
            def get(ids):
                np.take(Wx, ids, axis=0, out=out, mode="clip")
                fold_(out)
                return out
        else:
            e = np.empty((batch, embed.shape[1]), embed.dtype)    # (B, E)

            def get(ids):
                np.take(embed, ids, axis=0, out=e, mode="clip")
                matmul(e, Wx, out=out)
                fold_(out)
                return out
        self.get = get


def _first_input(first: bool, p: dict, embed: np.ndarray | None, fold_, batch: int):
    """get(x) of layer 0's input contribution (an id for one stream, ids (B,) for B), or None
    above layer 0, where the input is the layer below's h."""
    if not first:
        return None
    if batch == 1:
        return _InputRows(p["Wx"], embed, fold_).get
    return _InputGather(p["Wx"], embed, fold_, batch).get


def _rows_view(batch: int):
    """What the elementwise calls see of a (B, n) buffer: its 1-D row for one stream (see the
    module docstring), the buffer itself for B > 1."""
    return (lambda a: a[0]) if batch == 1 else (lambda a: a)


def _per_row(x: np.ndarray, batch: int) -> np.ndarray:
    """A constant operand x (n,) of the elementwise calls: itself for one stream, repeated on B
    rows for B, since NumPy takes about twice as long over a (B, n) array when the other operand
    is a broadcast (n,)."""
    return x if batch == 1 else np.tile(x, (batch, 1))


# The layers below build their step as a closure over fixed buffers and views: a character
# then costs no attribute look-ups or slicing beyond the NumPy calls themselves, which at these
# sizes cost about as much as their arithmetic. step(x): x is the input (an id for one stream,
# ids (B,) for B, at layer 0) or the layer below's h (B, H); it returns this layer's h (B, H),
# a buffer overwritten by the next step. Matrix products take (B, n) arrays, elementwise calls
# their views (_rows_view); gate blocks are sliced on the last axis, which serves both.

add, multiply, subtract, matmul = np.add, np.multiply, np.subtract, np.matmul


def _input_and_recurrent(x, h2, Wh, Wx, first, out2, out, spare2, spare) -> None:
    """out2 (B, G) = h2 Wh + the input's part: first(x) in layer 0, the product x Wx above it
    (spare2 (B, G) its buffer); out and spare are their views. The general step adds the same
    two terms in the other order, which IEEE addition gives the same bits."""
    matmul(h2, Wh, out=out2)
    if first is not None:
        add(out, first(x), out=out)
    else:
        matmul(x, Wx, out=spare2)
        add(out, spare, out=out)


class _LSTM:
    """One LSTM layer. State: h (B, H) and c, which lives in gc[1] (gc (2, B, H) = g, c; (2, H)
    for one stream), so that g * i and c * f are one multiply by a[..., :2H] seen as (2, B, H)
    (i, f), with g and c each contiguous (NumPy writes a strided (B, H) block at about half
    speed).

    a (B, 4H) holds k * pre-activations (LSTM.k), then the activations i, f, s, o in place.
    `ones_*` stand in for the constant 1, which NumPy would convert on every call."""

    def __init__(self, cell: LSTM, p: dict, first: bool, embed: np.ndarray | None, batch: int):
        H, dt = cell.hidden_size, p["Wh"].dtype
        k = cell.k.astype(dt)                                    # (4H,)
        Wh_k = p["Wh"] * k                                        # (H, 4H)
        b_k = _per_row(p["b"] * k, batch)                         # (4H,) or (B, 4H)
        Wx_k = None if first else p["Wx"] * k                     # (H, 4H)
        k_rows = _per_row(k, batch)
        get = _first_input(first, p, embed, lambda z: multiply(z, k_rows, out=z), batch)
        view = _rows_view(batch)
        lead = () if batch == 1 else (batch,)
        peep = cell.peephole
        if peep:
            pif_k = -np.stack([p["pi"], p["pf"]]).reshape(2, *(1,) * len(lead), H)  # k = -1 for i, f
            po_k = _per_row(-p["po"], batch)                      # (H,) or (B, H)
        self.h2 = h2 = np.zeros((batch, H), dt)
        self.gc = gc = np.zeros((2, *lead, H), dt)
        a2, rec2 = np.empty((batch, 4 * H), dt), np.empty((batch, 4 * H), dt)
        t, pc = np.empty((*lead, H), dt), np.empty((2, *lead, H), dt)
        a, rec, h = view(a2), view(rec2), view(h2)
        a_if = np.moveaxis(a[..., : 2 * H].reshape(*lead, 2, H), -2, 0)  # (2, B, H) or (2, H)
        a_sig = a[..., : 3 * H] if peep else a
        ones_sig, ones_h = (_per_row(np.ones(a_sig.shape[-1], dt), batch), _per_row(np.ones(H, dt), batch))
        s, o, (g, c) = a[..., 2 * H : 3 * H], a[..., 3 * H :], gc

        def step(x):
            # General: ((x Wx + h Wh) + b) k. Here (h Wh k + x Wx k) + b k: the same bits.
            _input_and_recurrent(x, h2, Wh_k, Wx_k, get, a2, a, rec2, rec)
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
    """One GRU layer. State: h (B, H), updated in place.

    rec (B, 3H) holds h Wh k, then r, z (sigmoids) and k_n (h Wh_n + bh_n) in place; the x side
    (B, 3H) is k (x Wx + bx + bh_rz), for layer 0 with the bias folded in as the input is
    fetched (here folding is exact: the general step adds that bias to x Wx before anything
    else)."""

    def __init__(self, cell: GRU, p: dict, first: bool, embed: np.ndarray | None, batch: int):
        H, dt = cell.hidden_size, p["Wh"].dtype
        k, bias_x, bhn_k = cell.scaled(p, dt)                    # (3H,), (3H,), (H,)
        Wh_k = p["Wh"] * k                                        # (H, 3H)

        bias_x_rows, k_rows = _per_row(bias_x, batch), _per_row(k, batch)

        def fold_(z):
            add(z, bias_x_rows, out=z)
            multiply(z, k_rows, out=z)

        get = _first_input(first, p, embed, fold_, batch)
        if not first:
            Wx_k = p["Wx"] * k                                    # (H, 3H)
            bx_k = _per_row(bias_x * k, batch)                    # (3H,) or (B, 3H)
        view = _rows_view(batch)
        lead = () if batch == 1 else (batch,)
        self.h2 = h2 = np.zeros((batch, H), dt)
        ax2, rec2 = np.empty((batch, 3 * H), dt), np.empty((batch, 3 * H), dt)
        n, t = np.empty((*lead, H), dt), np.empty((*lead, H), dt)
        ones, ones_h = _per_row(np.ones(2 * H, dt), batch), _per_row(np.ones(H, dt), batch)
        bhn_k = _per_row(bhn_k, batch)                            # (H,) or (B, H)
        rec, h, ax_above = view(rec2), view(h2), view(ax2)
        rz, r, z, hn = rec[..., : 2 * H], rec[..., :H], rec[..., H : 2 * H], rec[..., 2 * H :]

        def step(x):
            if get is not None:
                ax = get(x)
            else:
                matmul(x, Wx_k, out=ax2)
                ax = ax_above
                add(ax, bx_k, out=ax)
            matmul(h2, Wh_k, out=rec2)
            add(rz, ax[..., : 2 * H], out=rz)
            _sigmoid_of_negated(rz, ones)
            add(hn, bhn_k, out=hn)
            multiply(r, hn, out=n)
            add(ax[..., 2 * H :], n, out=n)
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
    """One vanilla RNN layer. State: h (B, H), in one of two buffers that swap, since h' is
    computed from h Wh into a buffer of its own."""

    def __init__(self, cell: RNN, p: dict, first: bool, embed: np.ndarray | None, batch: int):
        H, dt = cell.hidden_size, p["Wh"].dtype
        Wh, Wx, b = p["Wh"], p["Wx"], _per_row(p["b"], batch)    # (H, H), (D, H), (H,) or (B, H)
        get = _first_input(first, p, embed, lambda z: None, batch)
        view = _rows_view(batch)
        relu = cell.nonlinearity == "relu"
        buffers = [(buf, view(buf)) for buf in np.zeros((2, batch, H), dt)]  # [h, spare], each with its view
        self.buffers = buffers
        xw2, zero = np.empty((batch, H), dt), _per_row(np.zeros(H, dt), batch)
        xw = view(xw2)

        def step(x):
            (h2, _), (a2, a) = buffers
            _input_and_recurrent(x, h2, Wh, Wx, get, a2, a, xw2, xw)  # general: (x Wx + h Wh) + b
            add(a, b, out=a)
            if relu:
                np.maximum(a, zero, out=a)
            else:
                np.tanh(a, out=a)
            buffers.reverse()
            return a2

        self.step = step

    def reset(self) -> None:
        self.buffers[0][0].fill(0)


_LAYERS = {LSTM: _LSTM, GRU: _GRU, RNN: _RNN}


def _layers(cells: list, params: dict, embedding: bool, batch: int) -> list:
    """The model's layers (cells, params as CharRNN holds them) for `batch` streams."""
    layers = []
    for layer, cell in enumerate(cells):
        prefix = f"layers.{layer}."
        p = {key[len(prefix):]: value for key, value in params.items() if key.startswith(prefix)}
        embed = params["embed.W"] if embedding else None  # (V, E)
        layers.append(_LAYERS[type(cell)](cell, p, layer == 0, embed, batch))
    return layers


class _FullHead:
    """run(h (B, H)) -> logits (B, V) = h W + b, into one buffer."""

    def __init__(self, params: dict, dt, batch: int):
        W, b = params["head.W"], _per_row(params["head.b"], batch)  # (H, V), (V,) or (B, V)
        self.out = out = np.empty((batch, W.shape[1]), dt)
        out_view = _rows_view(batch)(out)

        def head(h2):
            matmul(h2, W, out=out)
            add(out_view, b, out=out_view)
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
        self.layers = _layers(cells, params, embedding, 1)
        self.head = _AdaptiveHead(adaptive, params, dt) if adaptive else _FullHead(params, dt, 1)
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



class Streams:
    """CharRNN.step for B > 1 streams, on buffers allocated once and weights scaled once: the
    same layers as OneStream's with B rows, the state kept inside.

        streams = model.streams(B)           # the current parameters; None if step is overridden
        logits = streams.step(ids)           # ids (B,) int -> (B, V), like model.step(ids, state)

    The logits are model.step's bit for bit (tests/test_stepper.py); the draw stays
    sample.choose's. The adaptive head is the general one: with B rows its calls already serve
    the whole batch.
    """

    def __init__(self, cells: list, params: dict, embedding: bool, adaptive: AdaptiveHead | None,
                 batch: int):
        dt = params["layers.0.Wh"].dtype
        self.layers = _layers(cells, params, embedding, batch)
        self._steps = [layer.step for layer in self.layers]
        if adaptive:
            self._head = lambda h: adaptive.log_probs(params, h)
        else:
            self._head = _FullHead(params, dt, batch).run

    def reset(self) -> None:
        """Back to the zero state (model.init_state(B))."""
        for layer in self.layers:
            layer.reset()

    def step(self, ids: np.ndarray) -> np.ndarray:
        """Feed ids (B,) int64; returns the next logits (B, V) in the model dtype (log-probabilities
        with the adaptive head), a buffer overwritten by the next step. np.errstate is entered
        here, once per step, as OneStream.step explains."""
        x = ids
        with np.errstate(over="ignore"):
            for step in self._steps:
                x = step(x)
            return self._head(x)

def _sigmoid_of_negated(z: np.ndarray, ones: np.ndarray) -> None:
    """In place: z (n,) or (B, n) = -a becomes sigmoid(a) = 1 / (1 + exp(-a)),
    cell_base.sigmoid_of_negated_ with ones (z's shape) for the 1, which NumPy would otherwise
    convert on every call."""
    np.exp(z, out=z)
    np.add(z, ones, out=z)
    np.reciprocal(z, out=z)
