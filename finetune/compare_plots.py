"""The comparison's two figures: depth vs error, and error vs inference cost with its Pareto front."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.ticker import FuncFormatter, NullFormatter, NullLocator, ScalarFormatter  # noqa: E402

Row = dict[str, Any]

# (row key, legend label, marker style): the same weights' figures as separate, labelled series
DEPTH_SERIES = (
    ("top1_error", "this dataset: validation top-1 error", {"marker": "o", "color": "tab:blue"}),
    ("imagenet_top1_error", "ImageNet-1K top-1 error of the same weights (single crop)",
     {"marker": "s", "color": "tab:orange"}),
    ("ilsvrc_top5_error", "ILSVRC top-5 error of the family's entry (ensembles, test set)",
     {"marker": "^", "color": "tab:gray", "markerfacecolor": "none"}),
)
COSTS = (
    ("predict_ms_per_image", "inference ms per image (batch 1, measured here)"),
    ("gflops", "GFLOPs per image (at the architecture's default input size)"),
)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the (cost, error) points that no other point beats on both, cheapest first."""
    front: list[int] = []
    for index in sorted(range(len(points)), key=lambda i: points[i]):
        if not front or points[index][1] < points[front[-1]][1]:
            front.append(index)
    return front


def _label_points(axis: Axes, xs: Sequence[float], ys: Sequence[float], names: Sequence[str], color: str) -> None:
    for x, y, name in zip(xs, ys, names):
        axis.annotate(name, (x, y), xytext=(4, 4), textcoords="offset points", fontsize=8, color=color)


def _log_axis_at(axis: Axes, ticks: Sequence[float]) -> None:
    """A log x axis ticked at the values themselves (depth 8, 22, 152 read better than 10^1, 10^2)."""
    axis.set_xscale("log")
    axis.set_xticks(sorted(set(ticks)))
    axis.xaxis.set_major_formatter(ScalarFormatter())
    axis.xaxis.set_minor_locator(NullLocator())


def _title(figure: plt.Figure, title: str) -> None:
    figure.suptitle(textwrap.fill(title, 110), fontsize=10)


def _empty(axis: Axes, message: str) -> None:
    axis.text(0.5, 0.5, message, ha="center", va="center", transform=axis.transAxes, color="tab:gray")


def _save(figure: plt.Figure, path: Path) -> None:
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_depth_vs_error(rows: Sequence[Row], path: Path, title: str) -> None:
    """Error (%) against depth on a log axis; each series of figures labelled, each point named."""
    finished = [row for row in rows if row["status"] == "ok"]
    figure, axis = plt.subplots(figsize=(10, 6))
    depths: list[float] = []
    for key, label, style in DEPTH_SERIES:
        points = sorted((row["depth"], row[key], row["name"]) for row in finished if row[key] is not None)
        if not points:
            continue
        xs, ys, names = zip(*points)
        axis.plot(xs, ys, linestyle=":", label=label, **style)
        _label_points(axis, xs, ys, names, style["color"])
        depths += xs
    if depths:
        _log_axis_at(axis, depths)
        axis.legend(fontsize=8)
    else:
        _empty(axis, "no finished runs")
    if depths and all(row["imagenet_top1_error"] is None for row in finished):
        axis.text(0.99, 0.01, "no ImageNet figures: the runs started from random or own weights", fontsize=8,
                  ha="right", va="bottom", transform=axis.transAxes, color="tab:gray")
    axis.set(xlabel="depth (layers with weights, as the papers count them; log scale)", ylabel="error (%)")
    axis.grid(alpha=0.3)
    _title(figure, f"Depth vs error — {title}")
    _save(figure, path)


def plot_error_vs_cost(rows: Sequence[Row], path: Path, title: str) -> None:
    """This dataset's top-1 error against each inference cost, the Pareto front marked."""
    finished = [row for row in rows if row["status"] == "ok" and row["top1_error"] is not None]
    figure, axes = plt.subplots(1, len(COSTS), figsize=(13, 5.5))
    for axis, (key, label) in zip(axes, COSTS):
        measured = [row for row in finished if row[key]]
        axis.set(xlabel=f"{label}, log scale", ylabel="validation top-1 error (%)")
        axis.grid(alpha=0.3)
        if not measured:
            _empty(axis, "no finished runs")
            continue
        points = [(row[key], row["top1_error"]) for row in measured]
        xs, ys = zip(*points)
        axis.scatter(xs, ys, color="tab:blue", zorder=2, label="architecture")
        _label_points(axis, xs, ys, [row["name"] for row in measured], "black")
        front = [points[i] for i in pareto_front(points)]
        axis.plot(*zip(*front), drawstyle="steps-post", color="tab:red", marker="o", markersize=11,
                  markerfacecolor="none", zorder=3, label="Pareto front (nothing cheaper is as accurate)")
        axis.set_xscale("log")
        # Plain numbers (20, 30, 100) rather than 2×10^1; minor ticks labelled only within one decade,
        # where there are few of them.
        plain = FuncFormatter(lambda value, _: f"{value:g}")
        axis.xaxis.set_major_formatter(plain)
        axis.xaxis.set_minor_formatter(plain if max(xs) / min(xs) < 10 else NullFormatter())
        axis.legend(fontsize=8, loc="best")
    _title(figure, f"Error vs inference cost — {title}")
    _save(figure, path)
