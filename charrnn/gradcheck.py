"""Finite-difference check of every hand-written gradient, in float64.

Compares CharRNN.forward_backward against central differences of the loss for every parameter
and every array of the initial state, and reports the norm-wise relative error
||analytic - numeric|| / max(||analytic||, ||numeric||) per array. Element-wise relative errors
hit a noise floor on tiny entries; the norm-wise form does not.
"""

from __future__ import annotations

import numpy as np

from .model import CharRNN, ModelSpec


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    scale = max(np.linalg.norm(a), np.linalg.norm(b))
    return 0.0 if scale == 0 else float(np.linalg.norm(a - b) / scale)


def numeric_grad(loss_fn, array: np.ndarray, eps: float) -> np.ndarray:
    """Central differences of loss_fn() with respect to every entry of `array` (perturbed in place)."""
    grad = np.zeros_like(array)
    flat, gflat = array.reshape(-1), grad.reshape(-1)
    for k in range(flat.size):
        saved = flat[k]
        flat[k] = saved + eps
        up = loss_fn()
        flat[k] = saved - eps
        down = loss_fn()
        flat[k] = saved
        gflat[k] = (up - down) / (2 * eps)
    return grad


def check_model(model: CharRNN, x: np.ndarray, y: np.ndarray, state: list,
                dropout_seed: int | None = None, eps: float = 1e-5) -> dict[str, float]:
    """Relative error per parameter key and per initial-state array (`state.L.h`, `state.L.c`).

    model: a float64 CharRNN with params set. x, y: (B, T) ids. state: initial state, nonzero
    to exercise its gradient. dropout_seed: when set, every evaluation draws the same dropout masks.
    """
    def rng():
        return None if dropout_seed is None else np.random.default_rng(dropout_seed)

    def loss_fn():
        return model.forward_backward(x, y, state, rng())[0]

    _, grads, dstate0, _ = model.forward_backward(x, y, state, rng())
    errors = {}
    for key, value in model.params.items():
        errors[key] = relative_error(grads[key], numeric_grad(loss_fn, value, eps))
    for layer, (cell, arrays) in enumerate(zip(model.cells, state)):
        for name, array, analytic in zip(cell.state_names, arrays, dstate0[layer]):
            errors[f"state.{layer}.{name}"] = relative_error(analytic, numeric_grad(loss_fn, array, eps))
    return errors


def random_problem(cell: str = "lstm", layers: int = 2, steps: int = 4, batch: int = 2,
                   vocab: int = 5, hidden: int = 3, embedding: int = 0, seed: int = 0,
                   adaptive: bool = False, **model_args):
    """A tiny float64 model with random data and a random nonzero initial state; with adaptive,
    an adaptive head of two clusters (shortlist and clusters each a third of the vocabulary, in
    a random frequency order; vocab >= 3)."""
    rng = np.random.default_rng(seed)
    if adaptive:
        model_args.update(head="adaptive", head_cutoffs=[vocab // 3, 2 * vocab // 3], head_div=2.0,
                          head_order=rng.permutation(vocab).tolist())
    model = CharRNN(ModelSpec(vocab, hidden, layers, cell=cell, embedding_size=embedding,
                    dtype=np.float64, **model_args))
    model.init_params(rng)
    # Random biases too: zero (or constant) biases would hide errors in their gradients.
    for key in model.params:
        model.params[key] += rng.normal(0, 0.1, size=model.params[key].shape)
    x = rng.integers(0, vocab, size=(batch, steps))
    y = rng.integers(0, vocab, size=(batch, steps))
    state = [tuple(rng.normal(0, 0.5, size=a.shape) for a in layer) for layer in model.init_state(batch)]
    return model, x, y, state
