"""The confusion matrix of an evaluation as CSV and as a picture readable up to about 50 classes."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure
from torch import Tensor

from finetune.results.plots import save_figure
from zoo._io import write_atomic

ANNOTATED_CLASSES = 25  # beyond this the counts no longer fit in their cells
LONGEST_NAME = 24


def write_confusion_csv(matrix: Tensor, classes: Sequence[str], path: Path) -> None:
    """Rows are true classes, columns predicted classes, cells image counts."""

    def write(temporary: Path) -> None:
        with temporary.open("w", newline="", encoding="utf-8") as file:
            writer = csv.writer(file)
            writer.writerow(["true \\ predicted", *classes])
            writer.writerows([name, *row] for name, row in zip(classes, matrix.tolist(), strict=True))

    write_atomic(path, write)


def _short(name: str) -> str:
    return name if len(name) <= LONGEST_NAME else name[: LONGEST_NAME - 1] + "…"


def plot_confusion_matrix(matrix: Tensor, classes: Sequence[str], path: Path, title: str) -> None:
    """Cells coloured by the share of each true class (so small classes show), labelled with counts."""
    count = len(classes)
    side = min(20.0, max(5.0, 0.34 * count + 3.0))
    font_size = 10 if count <= 15 else max(5, 10 - (count - 15) // 7)
    shares = (matrix.float() / matrix.sum(dim=1, keepdim=True).clamp(min=1)).numpy()
    figure = Figure(figsize=(side + 1.5, side))
    axis = figure.subplots()
    image = axis.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    names = [_short(name) for name in classes]
    axis.set_xticks(range(count), names, rotation=90, fontsize=font_size)
    axis.set_yticks(range(count), names, fontsize=font_size)
    axis.set(xlabel="predicted class", ylabel="true class", title=title)
    if count <= ANNOTATED_CLASSES:
        for row, values in enumerate(matrix.tolist()):
            for column, value in enumerate(values):
                colour = "white" if shares[row, column] > 0.5 else "black"
                axis.text(column, row, str(value), ha="center", va="center", color=colour, fontsize=font_size)
    figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04, label="share of the true class")
    save_figure(figure, path)
