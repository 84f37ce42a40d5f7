"""Learning curves of a run (matplotlib, no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_learning_curves(rows: Sequence[dict[str, float | None]], path: Path, title: str) -> None:
    """Loss (train and val) and validation top-1 error per epoch, side by side."""
    epochs = [int(row["epoch"]) for row in rows]
    figure, (loss_axis, error_axis) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("train/loss", "train loss"), ("val/loss", "val loss")):
        points = [(e, row[key]) for e, row in zip(epochs, rows) if row.get(key) is not None]
        if points:
            loss_axis.plot(*zip(*points), marker="o", label=label)
    loss_axis.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    loss_axis.legend()
    errors = [(e, row["val/top1_error"]) for e, row in zip(epochs, rows) if row.get("val/top1_error") is not None]
    if errors:
        error_axis.plot(*zip(*errors), marker="o", color="tab:red")
    error_axis.set(xlabel="epoch", ylabel="top-1 error (%)", title="validation top-1 error")
    for axis in (loss_axis, error_axis):
        axis.grid(alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
