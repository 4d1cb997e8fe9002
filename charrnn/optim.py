"""Gradient clipping, optimizers and learning-rate schedules over flat dicts of arrays.

Parameters and gradients are `dict[str, np.ndarray]` with identical keys (`layers.0.Wx`,
`head.W`, ...). Every update runs in place with `out=` into buffers allocated once, because
it runs at every training step on arrays of up to millions of elements. The learning rate is
an argument of `step`, not optimizer state, so a schedule stays a plain function of the step.
"""

from __future__ import annotations

import inspect
import math

import numpy as np

from charrnn import names
from charrnn.errors import CharRNNError, UsageError

__all__ = [
    "clip_grad_norm", "clip_grad_value", "Optimizer", "SGD", "Adagrad", "RMSprop", "Adam",
    "make_optimizer", "hyperparameters", "learning_rate", "OPTIMIZERS", "SCHEDULES",
]

Arrays = dict[str, np.ndarray]


def _global_norm(grads: Arrays) -> float:
    """L2 norm of all gradients taken together, as a Python float."""
    # vdot runs through BLAS on the flat array: no temporary the size of the gradient.
    return math.sqrt(sum(float(np.vdot(g, g)) for g in grads.values()))


def _positive(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not (math.isfinite(value) and value > 0):
        raise UsageError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def clip_grad_norm(grads: Arrays, max_norm: float) -> float:
    """Scale all gradients in place by max_norm / norm when their global L2 norm exceeds max_norm.

    Returns the norm before clipping. Gradients are left untouched when the norm is at most
    max_norm, and also when it is not finite (inf/nan), so the caller can see it and decide.
    """
    max_norm = _positive(max_norm, "max_norm (train.grad_clip)")
    norm = _global_norm(grads)
    if math.isfinite(norm) and norm > max_norm:
        scale = max_norm / norm
        for g in grads.values():
            np.multiply(g, scale, out=g)
    return norm


def clip_grad_value(grads: Arrays, max_value: float) -> float:
    """Clip every gradient element into [-max_value, max_value] in place.

    Returns the global L2 norm before clipping (for logging, like `clip_grad_norm`).
    """
    max_value = _positive(max_value, "max_value (train.grad_clip)")
    norm = _global_norm(grads)
    for g in grads.values():
        np.clip(g, -max_value, max_value, out=g)
    return norm


def _in_range(value: object, name: str, lo: float, hi: float, hi_open: bool = True) -> float:
    """value as a float, or UsageError unless lo <= value < hi (value <= hi if not hi_open)."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if ok:
        value = float(value)
        ok = lo <= value and (value < hi if hi_open else value <= hi)
    if not ok:
        interval = f"[{lo:g}, {hi:g}{')' if hi_open else ']'}"
        raise UsageError(f"{name} must be in {interval}, got {value!r}")
    return value


class Optimizer:
    """Base class: per-parameter state slots, the step counter and state_dict / load_state_dict.

    Subclasses name their state arrays in `slots` (each shaped and typed like its parameter)
    and implement `_update`. Weight decay is plain L2 (added to the gradient, see `_l2_grad`)
    unless a subclass sets `coupled_decay = False` and applies it itself.
    """

    slots: tuple[str, ...] = ()
    coupled_decay = True

    def __init__(self, params: Arrays, weight_decay: float = 0.0):
        self.weight_decay = _in_range(weight_decay, "weight_decay", 0.0, math.inf)
        self.step_count = 0
        self._state = {key: {slot: np.zeros_like(p) for slot in self.slots} for key, p in params.items()}
        # Scratch space, not state: one temporary per parameter, plus one for the L2-decayed
        # gradient when there is weight decay (the caller's gradients are never modified).
        self._tmp = {key: np.empty_like(p) for key, p in params.items()}
        needs_decayed = self.weight_decay and self.coupled_decay
        self._decayed = {key: np.empty_like(p) for key, p in params.items()} if needs_decayed else {}

    def step(self, params: Arrays, grads: Arrays, lr: float) -> None:
        """Update every params[key] in place from grads[key] (same shape) with learning rate lr."""
        if params.keys() != self._state.keys() or grads.keys() != self._state.keys():
            raise CharRNNError(
                f"{type(self).__name__}.step: params and grads must have the keys the optimizer was "
                f"built with ({len(self._state)} keys)"
            )
        lr = float(lr)
        if not (math.isfinite(lr) and lr >= 0):
            raise UsageError(f"learning rate must be a finite number >= 0, got {lr!r}")
        self.step_count += 1
        for key, p in params.items():
            self._update(p, grads[key], self._state[key], self._tmp[key], key, lr)

    def _update(self, p: np.ndarray, g: np.ndarray, state: Arrays, tmp: np.ndarray, key: str,
                lr: float) -> None:
        """Update p in place; state holds this parameter's slots, tmp is scratch shaped like p."""
        raise NotImplementedError

    def _l2_grad(self, p: np.ndarray, g: np.ndarray, key: str) -> np.ndarray:
        """g + weight_decay * p (in the scratch buffer), or g itself without weight decay."""
        if not self.weight_decay:
            return g
        out = self._decayed[key]
        np.multiply(p, self.weight_decay, out=out)
        out += g
        return out

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the state: "<param key>.<slot>" arrays and "step", a 0-d int64 array."""
        d = {f"{key}.{slot}": arr.copy() for key, slots in self._state.items() for slot, arr in slots.items()}
        d["step"] = np.array(self.step_count, dtype=np.int64)
        return d

    def load_state_dict(self, d: dict[str, np.ndarray]) -> None:
        """Restore a `state_dict`. CharRNNError (nothing changed) on missing, extra or misshapen entries."""
        name = type(self).__name__
        slots = {f"{key}.{slot}": arr for key, st in self._state.items() for slot, arr in st.items()}
        missing = [k for k in [*slots, "step"] if k not in d]
        extra = sorted(set(d) - set(slots) - {"step"})
        if missing or extra:
            what = f"missing {_listing(missing)}" if missing else f"unexpected {_listing(extra)}"
            raise CharRNNError(f"{name} state does not fit: {what} (saved by another optimizer or model?)")
        values = {k: np.asarray(d[k]) for k in slots}
        for k, arr in slots.items():
            if values[k].shape != arr.shape or values[k].dtype.kind not in "fiu":
                raise CharRNNError(f"{name} state entry {k!r} has shape {values[k].shape} {values[k].dtype}, "
                                   f"expected {arr.shape} {arr.dtype}")
        step = np.asarray(d["step"])
        if step.shape != () or not np.issubdtype(step.dtype, np.integer) or step < 0:
            raise CharRNNError(f"{name} state entry 'step' must be a 0-d integer >= 0, got {step!r}")
        for k, arr in slots.items():
            np.copyto(arr, values[k], casting="same_kind")
        self.step_count = int(step)


def _listing(keys: list[str]) -> str:
    """At most five keys, quoted, for a one-line message."""
    shown = ", ".join(repr(k) for k in keys[:5])
    return shown + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")


class SGD(Optimizer):
    """Stochastic gradient descent, optionally with heavy-ball momentum.

    g' = g + weight_decay * p;  v = momentum * v + g';  p -= lr * v   (v = g' without momentum)
    """

    def __init__(self, params: Arrays, momentum: float = 0.0, weight_decay: float = 0.0):
        self.momentum = _in_range(momentum, "momentum", 0.0, 1.0)
        # Plain SGD keeps no state: the velocity buffer exists only with momentum.
        self.slots = ("velocity",) if self.momentum else ()
        super().__init__(params, weight_decay)

    def _update(self, p, g, state, tmp, key, lr):
        g = self._l2_grad(p, g, key)
        if self.momentum:
            v = state["velocity"]
            v *= self.momentum
            v += g
            g = v
        np.multiply(g, lr, out=tmp)
        p -= tmp


class Adagrad(Optimizer):
    """Adagrad: per-element steps shrink with the accumulated squared gradient.

    g' = g + weight_decay * p;  s += g'^2;  p -= lr * g' / (sqrt(s) + eps)
    """

    slots = ("sum_sq",)

    def __init__(self, params: Arrays, eps: float = 1e-8, weight_decay: float = 0.0):
        self.eps = _positive(eps, "eps")
        super().__init__(params, weight_decay)

    def _update(self, p, g, state, tmp, key, lr):
        g = self._l2_grad(p, g, key)
        s = state["sum_sq"]
        np.multiply(g, g, out=tmp)
        s += tmp
        _apply_scaled(p, g, s, 1.0, self.eps, lr, tmp)


class RMSprop(Optimizer):
    """RMSprop: per-element steps scaled by a running mean of squared gradients.

    g' = g + weight_decay * p;  a = alpha * a + (1 - alpha) * g'^2;  p -= lr * g' / (sqrt(a) + eps)
    """

    slots = ("sq_avg",)

    def __init__(self, params: Arrays, alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0.0):
        self.alpha = _in_range(alpha, "alpha", 0.0, 1.0)
        self.eps = _positive(eps, "eps")
        super().__init__(params, weight_decay)

    def _update(self, p, g, state, tmp, key, lr):
        g = self._l2_grad(p, g, key)
        a = state["sq_avg"]
        a *= self.alpha
        np.multiply(g, g, out=tmp)
        tmp *= 1.0 - self.alpha
        a += tmp
        _apply_scaled(p, g, a, 1.0, self.eps, lr, tmp)


class Adam(Optimizer):
    """Adam with bias correction and decoupled weight decay (AdamW).

    At step t (1, 2, ...):
        p *= 1 - lr * weight_decay
        m = beta1 * m + (1 - beta1) * g;   v = beta2 * v + (1 - beta2) * g^2
        p -= lr * (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)
    """

    slots = ("m", "v")
    coupled_decay = False  # the decay shrinks p directly and never enters m or v

    def __init__(self, params: Arrays, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                 weight_decay: float = 0.0):
        self.beta1 = _in_range(beta1, "beta1", 0.0, 1.0)
        self.beta2 = _in_range(beta2, "beta2", 0.0, 1.0)
        self.eps = _positive(eps, "eps")
        super().__init__(params, weight_decay)

    def _update(self, p, g, state, tmp, key, lr):
        t = self.step_count
        bias1 = 1.0 - self.beta1**t
        bias2 = 1.0 - self.beta2**t
        for pb, gb, m, v, tb in _blocks(p, g, state["m"], state["v"], tmp):
            if self.weight_decay:
                pb *= 1.0 - lr * self.weight_decay
            # m += (1 - beta1) (g - m) and v += (1 - beta2) (g^2 - v): the same moving averages,
            # one pass fewer than scaling the old value and the new one separately.
            np.subtract(gb, m, out=tb)
            tb *= 1.0 - self.beta1
            m += tb
            np.multiply(gb, gb, out=tb)
            tb -= v
            tb *= 1.0 - self.beta2
            v += tb
            # sqrt(v / bias2) = sqrt(v) / sqrt(bias2): the correction becomes two scalars.
            _apply_scaled(pb, m, v, 1.0 / math.sqrt(bias2), self.eps, lr / bias1, tb)


# Elements per block in `_blocks` (256 KB of float32): the five arrays of one block stay in cache
# (L3) across the dozen passes of an Adam update instead of streaming from memory each time:
# 69 -> 40 ms per step for 9M parameters.
_BLOCK = 1 << 16


def _blocks(*arrays: np.ndarray):
    """Matching flat blocks of same-shaped arrays (whole arrays if one is not contiguous)."""
    if not all(a.flags.c_contiguous for a in arrays):
        yield arrays
        return
    flat = [a.reshape(-1) for a in arrays]
    for start in range(0, flat[0].size, _BLOCK):
        yield [a[start : start + _BLOCK] for a in flat]


def _apply_scaled(p: np.ndarray, num: np.ndarray, sq: np.ndarray, sq_scale: float, eps: float,
                  lr: float, tmp: np.ndarray) -> None:
    """p -= lr * num / (sqrt(sq) * sq_scale + eps), in place, using tmp as the only temporary."""
    np.sqrt(sq, out=tmp)
    if sq_scale != 1.0:
        tmp *= sq_scale
    tmp += eps
    np.divide(num, tmp, out=tmp)
    tmp *= lr
    p -= tmp


OPTIMIZERS: dict[str, type[Optimizer]] = dict(zip(names.OPTIMIZERS, (SGD, Adagrad, RMSprop, Adam)))


def hyperparameters(name: str) -> list[str]:
    """The keyword arguments the optimizer called `name` takes (e.g. ["momentum", "weight_decay"]
    for "sgd"); UsageError for an unknown name."""
    cls = OPTIMIZERS.get(name) if isinstance(name, str) else None
    if cls is None:
        raise UsageError(f"unknown optimizer {name!r}: choose one of {', '.join(OPTIMIZERS)}")
    return [n for n in inspect.signature(cls.__init__).parameters if n not in ("self", "params")]


def make_optimizer(name: str, params: Arrays, **hyper: float) -> Optimizer:
    """The optimizer called `name` (one of OPTIMIZERS) over params.

    hyper holds that optimizer's keyword arguments; UsageError for an unknown name or argument.
    """
    accepted = hyperparameters(name)
    unknown = sorted(set(hyper) - set(accepted))
    if unknown:
        raise UsageError(
            f"optimizer {name!r} does not take {', '.join(unknown)}; it takes {', '.join(accepted)}"
        )
    return OPTIMIZERS[name](params, **hyper)


SCHEDULES = names.SCHEDULES


def learning_rate(step: int, base_lr: float, schedule: str = "constant", warmup_steps: int = 0,
                  total_steps: int | None = None, decay_rate: float = 0.5, decay_every: int = 1000,
                  min_lr: float = 0.0) -> float:
    """The learning rate at training step `step` (0, 1, 2, ...).

    With w = warmup_steps and s = step - w, the number of steps since warm-up ended:
        warm-up (step < w): base_lr * (step + 1) / w   (base_lr / w at step 0, base_lr at step w - 1)
        "constant":         base_lr
        "exponential":      base_lr * decay_rate ** (s / decay_every)
        "step":             base_lr * decay_rate ** floor(s / decay_every)
        "cosine":           min_lr + (base_lr - min_lr) * (1 + cos(pi * p)) / 2,
                            p = min(s / (total_steps - w), 1)
    Decay is counted from the end of warm-up so the rate is continuous there. For "cosine",
    total_steps is the length of the whole run including warm-up, and the rate stays at min_lr
    after it. Raises UsageError naming the offending argument.
    """
    _check_schedule(step, base_lr, schedule, warmup_steps, total_steps, decay_rate, decay_every, min_lr)
    base_lr, min_lr = float(base_lr), float(min_lr)
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    s = step - warmup_steps
    if schedule == "constant":
        return base_lr
    if schedule == "exponential":
        return base_lr * decay_rate ** (s / decay_every)
    if schedule == "step":
        return base_lr * decay_rate ** (s // decay_every)
    progress = min(s / (total_steps - warmup_steps), 1.0)
    return min_lr + (base_lr - min_lr) * (1.0 + math.cos(math.pi * progress)) / 2.0


def _check_schedule(step, base_lr, schedule, warmup_steps, total_steps, decay_rate, decay_every,
                    min_lr) -> None:
    """UsageError naming the first invalid argument of `learning_rate`."""
    if schedule not in SCHEDULES:
        raise UsageError(f"unknown learning-rate schedule {schedule!r}: choose one of {', '.join(SCHEDULES)}")
    _count(step, "step", 0)
    _count(warmup_steps, "warmup_steps", 0)
    _count(decay_every, "decay_every", 1)
    base_lr = _positive(base_lr, "learning_rate")
    _in_range(decay_rate, "decay_rate", 0.0, 1.0, hi_open=False)
    if decay_rate == 0:
        raise UsageError("decay_rate must be in (0, 1], got 0")
    _in_range(min_lr, "min_lr", 0.0, base_lr, hi_open=False)
    if schedule == "cosine":
        if total_steps is None or _count(total_steps, "total_steps", 1) <= warmup_steps:
            raise UsageError(
                f"the cosine schedule needs total_steps > warmup_steps ({warmup_steps}), got {total_steps!r}"
            )


def _count(value: object, name: str, minimum: int) -> int:
    """value as an int, or UsageError unless it is an integer >= minimum."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise UsageError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)
