"""What the fast cells (lstm.py, gru.py, rnn.py) share: the parameter and state layout, the
input projection of a whole window, the transposes into columns, the exp-based sigmoid and the
input-weight gradients.

A cell is a bundle of pure functions over an explicit parameter dict `p`:

    shapes()                        -> {name: shape}             (the parameters p holds)
    init_params(rng, dtype)         -> p
    init_state(batch_size, dtype)   -> state, a tuple of (B, H) arrays named by state_names
    forward(p, x, state)            -> hs (T, B, H), final state, cache
    backward(p, dhs, dstate, cache) -> dx, dstate0, grads        (grads has the keys of p)
    step(p, x, state)               -> h (B, H), state           (one timestep, no cache; sampling)

The input x is either float (T, B, D) or integer ids (T, B) meaning one-hot vectors of size D.
One-hot input is implemented as a row gather of Wx (identical to one_hot(ids) @ Wx), and its
gradient as a scatter-add of rows; dx is then None. Cells keep no activations between calls.
"""

from __future__ import annotations

import numpy as np

from .functional import scatter_add_rows


class Cell:
    """Parameter initialisation and zero state from the subclass's shapes() and state_names.

    Weights are drawn from U(-1/sqrt(H), 1/sqrt(H)) (PyTorch's default for its recurrent
    layers), in the order shapes() lists them; biases (names starting with "b") start at zero.
    """

    state_names: tuple[str, ...] = ("h",)

    def __init__(self, input_size: int, hidden_size: int):
        self.input_size = input_size
        self.hidden_size = hidden_size

    def shapes(self) -> dict[str, tuple[int, ...]]:
        raise NotImplementedError

    def init_params(self, rng: np.random.Generator, dtype=np.float32) -> dict:
        bound = 1.0 / np.sqrt(self.hidden_size)
        return {name: (np.zeros(shape, dtype=dtype) if name.startswith("b")
                       else rng.uniform(-bound, bound, size=shape).astype(dtype))
                for name, shape in self.shapes().items()}

    def init_state(self, batch_size: int, dtype=np.float32) -> tuple:
        return tuple(np.zeros((batch_size, self.hidden_size), dtype=dtype) for _ in self.state_names)


def is_ids(x: np.ndarray) -> bool:
    return x.dtype.kind in "iu"  # np.issubdtype costs microseconds: too much per sampled character


def project(x: np.ndarray, Wx: np.ndarray, b: np.ndarray, k: np.ndarray | None = None) -> np.ndarray:
    """x (T, B, D) float or (T, B) ids -> (x Wx + b) * k, (T, B, G): a fresh array to overwrite.

    k (G,) scales each column (None: no scaling); the cells use it to fold constants of their
    nonlinearities into the pre-activations. The rows are spaced (see row_width): the result is
    a view of the first G columns of a buffer that may be one cache line wider.
    """
    T, B = x.shape[:2]
    G = Wx.shape[1]
    if k is None:
        k = np.ones((), dtype=Wx.dtype)
    if is_ids(x) and Wx.shape[0] <= T * B:
        # Small vocabulary: scale the whole table once, with the rows' spacing, then gather.
        table = spaced_rows(Wx.shape[0], G, Wx.dtype)
        np.multiply(Wx, k, out=table)
        table += b * k
        return np.take(table.base, x, axis=0)[:, :, :G]  # the base: the gathered rows keep the spacing
    out = spaced_rows(T * B, G, Wx.dtype)
    if is_ids(x):  # large vocabulary: gather first, then scale only those rows
        np.add(np.take(Wx, x.reshape(-1), axis=0), b, out=out)
        out *= k
    else:
        np.matmul(x.reshape(T * B, -1), Wx * k, out=out)
        out += b * k
    return out.reshape(T, B, G)


def row_width(G: int, dtype) -> int:
    """The length of the rows that hold G values in a buffer to be transposed (project's, and
    transposed's): G, or one cache line more, so that consecutive rows start an odd number of
    64-byte lines apart.

    The gated cells transpose project's (T, B, G) into columns, which reads B rows element by
    element. Rows a multiple of 4 KiB apart (G = 1,024 float32) put all B of them in one set of
    the L1 cache, which holds only a few: every read misses, and the transpose of a window took
    4.1 ms instead of 1.2 ms (T = 64, B = 32, G = 1,024 on an AMD Zen 4). An odd number of
    lines apart, B <= 64 rows fall in B different sets.
    """
    line = 64 // np.dtype(dtype).itemsize
    return G + line if G % line == 0 and (G // line) % 2 == 0 else G


def spaced_rows(n: int, G: int, dtype) -> np.ndarray:
    """An empty (n, G) array whose rows are row_width(G) apart: the first G columns of a
    buffer, its `base`, that may be one cache line wider."""
    return np.empty((n, row_width(G, dtype)), dtype=dtype)[:, :G]


def transposed(W: np.ndarray, k: np.ndarray | None = None) -> np.ndarray:
    """W (D, G), k (G,) or None -> (W * k).T, (G, D), contiguous: the recurrent weights as the
    time loops on columns multiply them.

    The transpose reads W column by column, the same pattern as columns() of project's rows
    (row_width says why that is slow), so W * k goes into spaced rows first: 256 x 1,024 float32
    took 0.2 ms instead of 0.9 to 1.8 ms (Zen 4, one thread).
    """
    scaled = spaced_rows(*W.shape, W.dtype)
    if k is None:
        np.copyto(scaled, W)
    else:
        np.multiply(W, k, out=scaled)
    return np.ascontiguousarray(scaled.T)


def columns(x: np.ndarray) -> np.ndarray:
    """(T, R, C) -> (T, C, R), contiguous: a window's timesteps of rows as columns, and back.

    The gated cells (lstm.py, gru.py) run their time loops on columns, (G, B) pre-activations
    and (H, B) states, so that each gate's block is contiguous for the elementwise calls of a
    timestep.
    """
    return np.ascontiguousarray(x.transpose(0, 2, 1))


def sigmoid_of_negated_(z: np.ndarray) -> None:
    """In place: z = -a becomes sigmoid(a) = 1 / (1 + exp(-a)). Call under errstate(over="ignore")."""
    np.exp(z, out=z)
    z += 1
    np.reciprocal(z, out=z)


def input_grads(x: np.ndarray, Wx: np.ndarray, dA: np.ndarray):
    """Backward of project for the input weights: dA (T, B, G) -> (dx or None, dWx)."""
    T, B, G = dA.shape
    dA2 = dA.reshape(T * B, G)
    if is_ids(x):
        return None, scatter_add_rows(x.reshape(-1), dA2, Wx.shape[0])
    x2 = x.reshape(T * B, -1)
    return (dA2 @ Wx.T).reshape(x.shape), x2.T @ dA2
