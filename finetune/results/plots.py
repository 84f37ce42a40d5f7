"""Figures of a run: how each is saved, and the learning curves.

Figures are ``matplotlib.figure.Figure`` objects, never pyplot's: no global backend is switched (importing
zoo leaves a notebook's backend alone) and no display is needed.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import cast

from matplotlib.figure import Figure

from zoo._io import write_atomic


def save_figure(figure: Figure, path: Path) -> None:
    """Lay out ``figure`` and write it to ``path`` as a PNG, atomically."""
    with warnings.catch_warnings():
        # A control character in a class or file name has no glyph: drawn as a box, not worth a warning that
        # would print the character itself (and the source line) on the terminal.
        warnings.filterwarnings("ignore", message="Glyph .* missing from")
        figure.tight_layout()
        write_atomic(path, lambda temporary: figure.savefig(temporary, format="png", dpi=100))


def plot_learning_curves(rows: Sequence[dict[str, float | None]], path: Path, title: str,
                         chosen_epoch: int | None = None) -> None:
    """Write ``learning_curves_figure`` to ``path``."""
    save_figure(learning_curves_figure(rows, title, chosen_epoch), path)


def learning_curves_figure(rows: Sequence[dict[str, float | None]], title: str,
                           chosen_epoch: int | None = None) -> Figure:
    """Loss (train and val) and validation top-1 error per epoch, side by side; ``chosen_epoch`` (from 1), the
    epoch whose checkpoint the run kept, marked on both."""
    epochs = [int(cast(float, row["epoch"])) for row in rows]  # every row has its epoch; metrics may be missing
    figure = Figure(figsize=(10, 4))
    loss_axis, error_axis = figure.subplots(1, 2)
    for key, label in (("train/loss", "train loss"), ("val/loss", "val loss")):
        points = [(e, row[key]) for e, row in zip(epochs, rows, strict=True) if row.get(key) is not None]
        if points:
            loss_axis.plot(*zip(*points, strict=True), marker="o", label=label)
    loss_axis.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    errors = [(e, row["val/top1_error"]) for e, row in zip(epochs, rows, strict=True)
              if row.get("val/top1_error") is not None]
    if errors:
        error_axis.plot(*zip(*errors, strict=True), marker="o", color="tab:red")
    error_axis.set(xlabel="epoch", ylabel="top-1 error (%)", title="validation top-1 error")
    for axis in (loss_axis, error_axis):
        axis.grid(alpha=0.3)
        if chosen_epoch is not None:
            axis.axvline(chosen_epoch, color="tab:green", linestyle=":", label=f"chosen: epoch {chosen_epoch}")
    chosen = [error for epoch, error in errors if epoch == chosen_epoch]
    if chosen:
        error_axis.plot([chosen_epoch], chosen, marker="*", markersize=14, color="tab:green", linestyle="none")
    loss_axis.legend()
    if chosen_epoch is not None:
        error_axis.legend()
    figure.suptitle(title)
    return figure
