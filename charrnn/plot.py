"""Learning curves from run directories (metrics.jsonl), drawn with matplotlib (optional extra)."""

from __future__ import annotations

import math
from pathlib import Path

from . import metrics
from .errors import CharRNNError


def read_metrics(run_dir: str | Path) -> dict[str, list[dict]]:
    """{"train": [...], "eval": [...]} records of a run directory's metrics.jsonl."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise CharRNNError(f"{run_dir}: no metrics.jsonl; is it a run directory?")
    events: dict[str, list[dict]] = {"train": [], "eval": []}
    for record in metrics.read(path):
        if record.get("event") in events:
            events[record["event"]].append(record)
    return events


def plot_runs(run_dirs: list[str], output: str) -> None:
    """Train and val loss (nats, with bits per character on the right axis) against steps and
    against wall time, one colour per run, to an image file."""
    runs = [(Path(run_dir).name, read_metrics(run_dir)) for run_dir in run_dirs]
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise CharRNNError("plotting needs matplotlib: pip install 'charrnn[plot]'") from None
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for index, (label, events) in enumerate(runs):
        colour = f"C{index % 10}"
        for ax, x_key, scale in ((axes[0], "step", 1), (axes[1], "elapsed", 1 / 60)):
            train, val = events["train"], events["eval"]
            ax.plot([r[x_key] * scale for r in train], [r["loss"] for r in train], color=colour,
                    alpha=0.35, linewidth=1)
            ax.plot([r[x_key] * scale for r in val], [r["val_loss"] for r in val], color=colour,
                    marker="o", markersize=3, label=f"{label} (best val {min((r['val_loss'] for r in val), default=float('nan')):.3f})")
    axes[0].set_xlabel("step")
    axes[1].set_xlabel("wall time (min)")
    axes[0].set_ylabel("loss (nats/char): faint = train, dots = val")
    right = axes[1].secondary_yaxis("right", functions=(lambda n: n / math.log(2), lambda b: b * math.log(2)))
    right.set_ylabel("bits per character")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    try:
        fig.savefig(output, dpi=110)
    except OSError as exc:
        raise CharRNNError(f"cannot write {output}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)
