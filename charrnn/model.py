"""CharRNN: a character-level language model built from a stack of recurrent cells.

    ids (B, T) --one-hot / embedding--> layer 0 --> ... --> layer L-1 --[dropout]--> head --> logits

Parameters live in one flat dict with dotted keys (`embed.W`, `layers.0.Wx`, `head.W`, ...);
gradients come back in a dict with the same keys, so clipping, optimizers, checkpoints and
gradient checks are each one loop over the keys. The recurrent state is owned by the caller:
passed in, returned out, never stored here.

Internally everything is time-major (T, B, ...): each timestep's slice is then contiguous.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from .adaptive import AdaptiveHead
from .cells import make_cell
from .functional import scatter_add_rows, softmax_cross_entropy_
from .stepper import OneStream


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What fixes a CharRNN's architecture: the config's model section (the same keys, the
    same defaults), plus what the corpus and train.dtype decide. A checkpoint stores it as
    meta["model"] (dataclasses.asdict) and rebuilds the model with ModelSpec(**meta["model"]).

    head_cutoffs is resolved here (never None for head "adaptive"), and head_order lists the
    ids by rank, most frequent first.
    """

    vocab_size: int
    hidden_size: int
    num_layers: int
    cell: str = "lstm"
    embedding_size: int = 0
    dropout: float = 0.0
    peephole: bool = False
    nonlinearity: str = "tanh"
    head: str = "full"
    head_cutoffs: list[int] | None = None
    head_div: float = 4.0
    head_order: list[int] | None = None
    dtype: str = "float32"

    # The entries the corpus and train.dtype decide rather than the model section.
    NOT_IN_CONFIG: ClassVar[tuple[str, ...]] = ("vocab_size", "head_order", "dtype")

    def __post_init__(self) -> None:
        # Plain JSON types whatever the caller passed (np.float64, arrays of ids), so that a
        # spec equals the one rebuilt from its checkpoint.
        fix = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen)
        fix("dtype", np.dtype(self.dtype).name)
        fix("head_div", float(self.head_div))
        for name in ("head_cutoffs", "head_order"):
            if getattr(self, name) is not None:
                fix(name, [int(v) for v in getattr(self, name)])


class CharRNN:
    """Stacked LSTM/GRU/RNN with a softmax head: full, or adaptive (charrnn.adaptive).

    Input is one-hot over the vocabulary (implemented as a row gather of the first layer's Wx),
    or, with embedding_size > 0, a learned embedding `embed.W` (V, E) feeding the first layer.
    Dropout (inverted, training only) is applied to the input of every layer above the first
    and to the input of the head.

        logits = h_top Wy + by          head.W (H, V), head.b (V,)      (head "full")
        loss   = mean over B*T of -log softmax(logits)[target]   (nats)

    With head "adaptive", head_cutoffs, head_div and head_order (rank -> id, most frequent
    first) define the clusters; the loss is the same exact NLL of a normalised distribution.
    The sizes most used below are copied out of `spec` as attributes.
    """

    def __init__(self, spec: ModelSpec):
        if spec.head not in ("full", "adaptive"):
            raise ValueError(f"unknown head {spec.head!r}")
        self.spec = spec
        self.vocab_size, self.hidden_size, self.num_layers = spec.vocab_size, spec.hidden_size, spec.num_layers
        self.embedding_size, self.dropout = spec.embedding_size, spec.dropout
        self.dtype = np.dtype(spec.dtype)
        input_size = spec.embedding_size or spec.vocab_size
        self.cells = [make_cell(spec.cell, input_size if layer == 0 else spec.hidden_size, spec.hidden_size,
                                peephole=spec.peephole, nonlinearity=spec.nonlinearity)
                      for layer in range(spec.num_layers)]
        self.adaptive = (AdaptiveHead(spec.hidden_size, spec.vocab_size, spec.head_cutoffs, spec.head_div,
                                      spec.head_order) if spec.head == "adaptive" else None)
        self.params: dict[str, np.ndarray] = {}

    # -- construction -------------------------------------------------------------------

    def init_params(self, rng: np.random.Generator) -> dict:
        """Fill self.params with a fresh initialisation drawn from rng and return it."""
        V, H, dt = self.vocab_size, self.hidden_size, self.dtype
        params = {}
        if self.embedding_size:
            params["embed.W"] = rng.standard_normal((V, self.embedding_size)).astype(dt)
        for layer, cell in enumerate(self.cells):
            for name, value in cell.init_params(rng, dt).items():
                params[f"layers.{layer}.{name}"] = value
        if not self.embedding_size:
            # With one-hot input each row of Wx is a character's embedding and only one row is
            # active per step (fan-in 1): the cells' 1/sqrt(H) would make the input signal tiny
            # and slow early learning, so draw those rows from U(-1, 1) instead.
            first = params["layers.0.Wx"]
            first[...] = rng.uniform(-1.0, 1.0, size=first.shape)
        if self.adaptive:
            params.update(self.adaptive.init_params(rng, dt))
        else:
            bound = 1.0 / np.sqrt(H)
            params["head.W"] = rng.uniform(-bound, bound, size=(H, V)).astype(dt)
            params["head.b"] = np.zeros(V, dtype=dt)
        self.params = params
        return params

    def set_unigram_biases(self, counts: np.ndarray) -> None:
        """Start the head's biases where the first prediction is the training text's (add-one)
        unigram distribution. counts: (V,) occurrences of each id.

        With zero biases Adam moves each logit by about one learning rate per step, and with
        thousands of characters (Tang poems: ~6,800) the rare ones need thousands of steps to
        reach their log-frequency: the loss sits above the unigram entropy all that time."""
        if self.adaptive:
            biases = self.adaptive.unigram_biases(counts)
        else:
            log_freq = np.log(np.asarray(counts, dtype=np.float64) + 1.0)
            biases = {"head.b": log_freq - log_freq.mean()}
        for key, value in biases.items():
            self.params[key][...] = value

    def param_shapes(self) -> dict:
        """Expected shape of every parameter, to validate a loaded checkpoint."""
        shapes = {f"layers.{layer}.{name}": shape
                  for layer, cell in enumerate(self.cells) for name, shape in cell.shapes().items()}
        if self.embedding_size:
            shapes["embed.W"] = (self.vocab_size, self.embedding_size)
        if self.adaptive:
            shapes.update(self.adaptive.shapes())
        else:
            shapes["head.W"] = (self.hidden_size, self.vocab_size)
            shapes["head.b"] = (self.vocab_size,)
        return shapes

    def num_params(self) -> int:
        return sum(int(np.prod(shape)) for shape in self.param_shapes().values())

    def _layer_params(self, layer: int) -> dict:
        prefix = f"layers.{layer}."
        return {k[len(prefix):]: v for k, v in self.params.items() if k.startswith(prefix)}

    def init_state(self, batch_size: int) -> list:
        """Zero state: a list with one tuple per layer, (h, c) for LSTM or (h,), each (B, H)."""
        return [cell.init_state(batch_size, self.dtype) for cell in self.cells]

    # -- training ---------------------------------------------------------------------------

    def dropout_keep(self, rng: np.random.Generator | None, batch_size: int, seq_len: int):
        """Which units dropout keeps in one window: None (no dropout, or rng None), or a bool
        array (L, T, B, H) whose [l] masks the output of layer l on its way to layer l + 1 (the
        head for the top layer).

        Drawn from rng in one call, so a window's masks do not depend on how its rows are
        later split between processes.
        """
        if not self.dropout or rng is None:
            return None
        shape = (self.num_layers, seq_len, batch_size, self.hidden_size)
        return rng.random(shape, dtype=np.float32) < 1.0 - self.dropout

    def _forward(self, x: np.ndarray, state: list, keep):
        """x (B, T) ids -> top hidden states (T, B, H) after head dropout, new state, caches.

        keep: see dropout_keep. Kept units are scaled by 1 / (1 - dropout) (inverted dropout).
        """
        ids = np.ascontiguousarray(x.T)  # (T, B)
        inp = self.params["embed.W"][ids] if self.embedding_size else ids
        masks = [None] * self.num_layers
        if keep is not None:
            keep_prob = self.dtype.type(1.0 - self.dropout)
            masks = [k.astype(self.dtype) / keep_prob for k in keep]
        caches, new_state = [], []
        for layer, cell in enumerate(self.cells):
            mask = masks[layer - 1] if layer > 0 else None
            if mask is not None:
                inp = inp * mask
            hs, st, cache = cell.forward(self._layer_params(layer), inp, state[layer])
            caches.append((cache, mask))
            new_state.append(st)
            inp = hs
        head_mask = masks[-1]
        if head_mask is not None:
            inp = inp * head_mask
        return ids, inp, new_state, caches, head_mask

    def _head_logits(self, top: np.ndarray) -> np.ndarray:
        """top (T, B, H) -> logits without the bias (T*B, V), rows in time-major order.

        The bias is added by softmax_cross_entropy_, block by block while the rows are in cache.
        """
        T, B, H = top.shape
        return top.reshape(T * B, H) @ self.params["head.W"]

    def forward_backward(self, x: np.ndarray, y: np.ndarray, state: list,
                         rng: np.random.Generator | None = None, keep: np.ndarray | None = None):
        """One truncated-BPTT window.

        x, y: (B, T) int, y[b, t] is the character after x[b, t].
        state: list per layer of tuples of (B, H) arrays (not modified).
        rng: draws the dropout masks; None disables dropout (evaluation, gradient checks).
        keep: dropout masks already drawn (see dropout_keep), used instead of drawing from rng.
        Returns (loss: float, mean nats over B*T; grads: dict like params;
                 dstate0: gradient of the loss w.r.t. `state`, same structure;
                 new_state: the state after the window, to carry into the next one).
        """
        B, T = x.shape
        if keep is None:
            keep = self.dropout_keep(rng, B, T)
        ids, top, new_state, caches, head_mask = self._forward(x, state, keep)
        targets = np.ascontiguousarray(y.T).reshape(-1)
        H = self.hidden_size
        if self.adaptive:
            nll, grads, dtop = self.adaptive.loss(self.params, top.reshape(T * B, H), targets,
                                                  grad_scale=1.0 / targets.size)
            dtop = dtop.reshape(T, B, H)
        else:
            dlogits = self._head_logits(top)
            # dlogits becomes the gradient of the mean loss w.r.t. the logits, in place.
            nll = softmax_cross_entropy_(dlogits, targets, bias=self.params["head.b"],
                                         grad_scale=1.0 / targets.size)
            grads = {
                "head.W": top.reshape(T * B, H).T @ dlogits,
                "head.b": dlogits.sum(axis=0),
            }
            dtop = (dlogits @ self.params["head.W"].T).reshape(T, B, H)
        loss = float(nll.mean(dtype=np.float64))
        if head_mask is not None:
            dtop *= head_mask
        dstate0 = [None] * self.num_layers
        for layer in range(self.num_layers - 1, -1, -1):
            cache, mask = caches[layer]
            dx, dst, layer_grads = self.cells[layer].backward(
                self._layer_params(layer), dtop, None, cache)
            dstate0[layer] = dst
            for name, g in layer_grads.items():
                grads[f"layers.{layer}.{name}"] = g
            if mask is not None:
                dx *= mask
            dtop = dx
        if self.embedding_size:
            grads["embed.W"] = scatter_add_rows(
                ids.reshape(-1), dtop.reshape(T * B, -1), self.vocab_size)
        return loss, grads, dstate0, new_state

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray, state: list,
                       rng: np.random.Generator | None = None, keep: np.ndarray | None = None):
        """(loss, grads, new_state) for one window; see forward_backward."""
        loss, grads, _, new_state = self.forward_backward(x, y, state, rng, keep)
        return loss, grads, new_state

    # -- evaluation and generation ----------------------------------------------------------

    def nll(self, x: np.ndarray, y: np.ndarray, state: list):
        """Per-character loss without dropout or gradients.

        x, y: (B, T) int. Returns (nll (B, T) float64 nats, new_state).
        """
        B, T = x.shape
        _, top, new_state, _, _ = self._forward(x, state, None)
        targets = np.ascontiguousarray(y.T).reshape(-1)
        if self.adaptive:
            nll = self.adaptive.loss(self.params, top.reshape(T * B, self.hidden_size), targets)[0]
        else:
            logits = self._head_logits(top)  # overwritten with probabilities
            nll = softmax_cross_entropy_(logits, targets, bias=self.params["head.b"])
        return nll.astype(np.float64).reshape(T, B).T, new_state

    def step(self, ids: np.ndarray, state: list):
        """One character for each of B streams: ids (B,) int -> logits (B, V), new state.

        With the adaptive head the logits are the log-probabilities (softmax gives them back)."""
        inp = self.params["embed.W"][ids] if self.embedding_size else ids
        new_state = []
        for layer, cell in enumerate(self.cells):
            inp, st = cell.step(self._layer_params(layer), inp, state[layer])
            new_state.append(st)
        if self.adaptive:
            return self.adaptive.log_probs(self.params, inp), new_state
        logits = inp @ self.params["head.W"]
        logits += self.params["head.b"]
        return logits, new_state

    def one_stream(self) -> OneStream | None:
        """The lean batch-1 twin of step (charrnn.stepper) over the current parameters: the same
        logits and draws, without step's per-character allocations. None for a subclass that
        overrides step, whose logits the twin would not reproduce."""
        if type(self).step is not CharRNN.step:
            return None
        return OneStream(self.cells, self.params, bool(self.embedding_size), self.adaptive)
