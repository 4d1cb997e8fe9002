"""The whole state of a training run, and how it is captured and restored.

Everything that makes a run resumable bit for bit is here: the parameters, the optimizer
slots, the carried hidden state, the dropout RNG and one `Progress` record. A capture is what
every checkpoint stores; the divergence guard restores the last one, in memory, to roll back.
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np

from . import __version__
from .config import Config, config_to_dict
from .corpus import Vocab
from .errors import CharRNNError
from .evaluate import bits_per_char
from .model import CharRNN


@dataclasses.dataclass
class Progress:
    """Where a run is; stored in every checkpoint's meta so that --resume continues exactly."""

    step: int = 0            # optimizer updates done
    epoch: int = 0           # completed passes over the training text
    cursor: int = 0          # next window of the current epoch
    best_val: float = math.inf
    lr_scale: float = 1.0    # lowered by each divergence rollback
    rollbacks: int = 0
    loss_avg: float | None = None   # running average of the training loss (divergence guard)
    avg_steps: int = 0       # steps that went into loss_avg
    elapsed: float = 0.0     # seconds of training so far, over all resumed sessions
    pilot_seconds: float = 0.0   # train.max_steps auto: time of the pilot's steps so far
    horizon: int | None = None   # train.max_steps auto: the steps max_time allows, once timed


class RunState:
    """The mutable state of one training run: model, optimizer, carried state, RNG, progress."""

    def __init__(self, cfg: Config, model: CharRNN, vocab: Vocab, optimizer, rng: np.random.Generator):
        self.cfg, self.model, self.vocab, self.optimizer, self.rng = cfg, model, vocab, optimizer, rng
        self.progress = Progress()
        self.state = model.init_state(cfg.train.batch_size)  # list per layer of (B, H) tuples
        self.last_val: float | None = None

    def capture(self) -> tuple[dict, dict]:
        """(arrays, meta) of the whole run: what a checkpoint stores and a rollback restores."""
        arrays = {k: v.copy() for k, v in self.model.params.items()}
        arrays.update({f"optim.{k}": v for k, v in self.optimizer.state_dict().items()})
        for layer, (cell, arrs) in enumerate(zip(self.model.cells, self.state)):
            for name, value in zip(cell.state_names, arrs):
                arrays[f"state.{layer}.{name}"] = value.copy()
        meta = {
            "charrnn_version": __version__,
            "model": dataclasses.asdict(self.model.spec),
            "vocab": self.vocab.to_json(),
            "config": config_to_dict(self.cfg),
            "progress": dataclasses.asdict(self.progress),
            "rng": self.rng.bit_generator.state,
            "metrics": {"val_loss": self.last_val,
                        "val_bpc": None if self.last_val is None else bits_per_char(self.last_val)},
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        return arrays, meta

    def restore(self, arrays: dict, meta: dict, source: str) -> None:
        """Load parameters, optimizer slots, carried state, progress and RNG from a capture."""
        for key, value in self.model.params.items():
            value[...] = arrays[key]
        slots = {k[len("optim."):]: v for k, v in arrays.items() if k.startswith("optim.")}
        if not slots:
            raise CharRNNError(f"{source}: holds no optimizer state, so it cannot be resumed; "
                               "use --init-from to start a new run from its weights")
        try:
            self.optimizer.load_state_dict(slots)
        except CharRNNError as exc:
            raise CharRNNError(f"{source}: {exc}; keep train.optimizer as it was, or use --init-from "
                               "to start a new run from its weights") from None
        self.state = [self._carried_state(arrays, layer, source) for layer in range(len(self.model.cells))]
        try:
            restored = Progress(**meta["progress"])
            self.rng.bit_generator.state = meta["rng"]
        except (KeyError, TypeError, ValueError) as exc:
            raise CharRNNError(f"{source}: invalid training progress in meta ({exc})") from None
        # In place: the loop holds a reference to self.progress.
        self.progress.__dict__.update(dataclasses.asdict(restored))

    def _carried_state(self, arrays: dict, layer: int, source: str) -> tuple:
        """Layer's carried state from a capture, checked against the run's (B, H) shapes."""
        names = [f"state.{layer}.{n}" for n in self.model.cells[layer].state_names]
        missing = [n for n in names if n not in arrays]
        if missing:
            raise CharRNNError(f"{source}: missing carried state {missing[0]!r}")
        for name, blank in zip(names, self.state[layer]):
            if arrays[name].shape != blank.shape or arrays[name].dtype.kind != "f":
                raise CharRNNError(
                    f"{source}: carried state {name!r} is {arrays[name].dtype}"
                    f"{list(arrays[name].shape)}, expected floats {list(blank.shape)} "
                    "(train.batch_size x units); resume with the train.batch_size it was "
                    "saved with, or use --init-from to start a new run from its weights")
        return tuple(np.array(arrays[n], dtype=self.model.dtype) for n in names)
