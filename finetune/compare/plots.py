"""The comparison's figures: depth vs error, error vs inference cost with its Pareto front, validation curves.

Errors carry their 95% intervals as error bars; rows that did not learn are drawn apart as red crosses.
"""

from __future__ import annotations

import csv
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter, NullLocator, ScalarFormatter

from finetune.compare.results import Row, headline_error, headline_interval, label
from finetune.results.plots import save_figure

# (row key, legend label, marker style): the published figures of the same weights, labelled as such
REFERENCE_SERIES: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("imagenet_top1_error", "ImageNet-1K top-1 error of the same weights (single crop)",
     {"marker": "s", "color": "tab:orange"}),
    ("ilsvrc_top5_error", "ILSVRC top-5 error of the family's entry (ensembles, test set)",
     {"marker": "^", "color": "tab:gray", "markerfacecolor": "none"}),
)
SETTING_COLORS = ("tab:blue", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")
NOT_LEARNED_STYLE: dict[str, Any] = {"marker": "X", "color": "tab:red", "markersize": 10, "linestyle": "none"}
COSTS = (
    ("predict_ms_per_image", "inference ms per image (batch 1, measured here)"),
    ("gflops", "GFLOPs per image (the trained network at the runs' image size)"),
)


def _split_name(rows: Sequence[Row]) -> str:
    return "test" if any(row.get("test_top1_error") is not None for row in rows) else "validation"


def _finished_error(row: Row) -> float:
    error = headline_error(row)
    assert error is not None  # the plots draw only finished rows (``_finished``), which have their error
    return error


def _error_bars(rows: Sequence[Row]) -> tuple[list[float], list[list[float]]]:
    """Headline errors and their 95% intervals as matplotlib's [below, above] distances."""
    errors = [_finished_error(row) for row in rows]
    intervals = [headline_interval(row) or [error, error] for row, error in zip(rows, errors, strict=True)]
    return errors, [[error - low for error, (low, _) in zip(errors, intervals, strict=True)],
                    [high - error for error, (_, high) in zip(errors, intervals, strict=True)]]


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the (cost, error) points that no other point beats on both, cheapest first."""
    front: list[int] = []
    for index in sorted(range(len(points)), key=lambda i: points[i]):
        if not front or points[index][1] < points[front[-1]][1]:
            front.append(index)
    return front


def _label_points(axis: Axes, xs: Sequence[float], ys: Sequence[float], names: Sequence[str], color: str) -> None:
    for x, y, name in zip(xs, ys, names, strict=True):
        axis.annotate(name, (x, y), xytext=(4, 4), textcoords="offset points", fontsize=8, color=color)


def _log_axis_at(axis: Axes, ticks: Sequence[float]) -> None:
    """A log x axis ticked at the values themselves (depth 8, 22, 152 read better than 10^1, 10^2)."""
    axis.set_xscale("log")
    axis.set_xticks(sorted(set(ticks)))
    axis.xaxis.set_major_formatter(ScalarFormatter())
    axis.xaxis.set_minor_locator(NullLocator())


def _title(figure: Figure, title: str) -> None:
    figure.suptitle(textwrap.fill(title, 110), fontsize=10)


def _empty(axis: Axes, message: str) -> None:
    axis.text(0.5, 0.5, message, ha="center", va="center", transform=axis.transAxes, color="tab:gray")




def _finished(rows: Sequence[Row]) -> list[Row]:
    return [row for row in rows if row["status"] == "ok" and headline_error(row) is not None]


def _plot_with_intervals(axis: Axes, rows: Sequence[Row], xs: Sequence[float], style: dict[str, Any],
                         name: str) -> None:
    """Rows that learned as points with 95% error bars; the others as red crosses, named as not learned."""
    learned = [(x, row) for x, row in zip(xs, rows, strict=True) if row["learned"]]
    if learned:
        points, kept = zip(*learned, strict=True)
        errors, bars = _error_bars(kept)
        axis.errorbar(points, errors, yerr=bars, capsize=3, linestyle=":", label=name, **style)
        _label_points(axis, points, errors, [label(row) for row in kept], style["color"])
    missed = [(x, row) for x, row in zip(xs, rows, strict=True) if not row["learned"]]
    if missed:
        points, kept = zip(*missed, strict=True)
        errors, bars = _error_bars(kept)
        axis.errorbar(points, errors, yerr=bars, capsize=3, label=f"{name}: did not learn (not below chance)",
                      **NOT_LEARNED_STYLE)
        _label_points(axis, points, errors, [f"{label(row)} (did not learn)" for row in kept], "tab:red")


def plot_depth_vs_error(rows: Sequence[Row], path: Path, title: str) -> None:
    """Error (%) with its 95% interval against depth on a log axis, rows that did not learn marked apart; the
    published ImageNet figures of the same networks on a panel of their own, never on your data's axis."""
    finished = _finished(rows)
    figure = Figure(figsize=(13, 5.5))
    axis, reference = figure.subplots(1, 2, sharex=True)
    split = _split_name(finished)
    settings = list(dict.fromkeys(row["setting"] for row in finished))
    for index, setting in enumerate(settings):
        members = sorted((row for row in finished if row["setting"] == setting), key=lambda row: row["depth"])
        name = f"{split} top-1 error" + (f" [{setting}]" if setting else "")
        style: dict[str, Any] = {"marker": "o", "color": SETTING_COLORS[index % len(SETTING_COLORS)]}
        _plot_with_intervals(axis, members, [row["depth"] for row in members], style, name)
    for key, name, style in REFERENCE_SERIES:
        points = sorted(dict.fromkeys((row["depth"], row[key], row["name"]) for row in finished
                                      if row[key] is not None))
        if points:
            xs, ys, names = zip(*points, strict=True)
            reference.plot(xs, ys, linestyle=":", label=name, **style)
            _label_points(reference, xs, ys, names, style["color"])
    depths = [row["depth"] for row in finished]
    if depths:
        _log_axis_at(axis, depths)
        axis.legend(fontsize=8)
    else:
        _empty(axis, "no finished runs")
    if reference.lines:
        reference.legend(fontsize=8)
    else:
        _empty(reference, "no ImageNet figures: the runs started from random weights"
               if finished and all(row["weights"] == "none" for row in finished)
               else "no ImageNet figures published for these networks")
    axis.set(title="your data", xlabel="depth (layers with weights, as the papers count them; log scale)",
             ylabel="error (%), bars: 95% interval")
    reference.set(title="published ImageNet figures of the same networks (not your data)",
                  xlabel="depth (log scale)", ylabel="ImageNet error (%)")
    for panel in (axis, reference):
        panel.grid(alpha=0.3)
    _title(figure, f"Depth vs error — {title}")
    save_figure(figure, path)


def plot_error_vs_cost(rows: Sequence[Row], path: Path, title: str) -> None:
    """This dataset's top-1 error (95% interval) against each inference cost; the Pareto front of the rows that
    learned."""
    finished = _finished(rows)
    split = _split_name(finished)
    figure = Figure(figsize=(13, 5.5))
    axes = figure.subplots(1, len(COSTS))
    for axis, (key, name) in zip(axes, COSTS, strict=True):
        measured = [row for row in finished if row[key]]
        axis.set(xlabel=f"{name}, log scale", ylabel=f"{split} top-1 error (%), bars: 95% interval")
        axis.grid(alpha=0.3)
        if not measured:
            _empty(axis, "no finished runs")
            continue
        _plot_with_intervals(axis, measured, [row[key] for row in measured], {"marker": "o", "color": "tab:blue"},
                             "architecture")
        learned = [row for row in measured if row["learned"]]
        if learned:
            points = [(row[key], _finished_error(row)) for row in learned]
            front = [points[i] for i in pareto_front(points)]
            axis.plot(*zip(*front, strict=True), drawstyle="steps-post", color="tab:red", marker="o", markersize=11,
                      markerfacecolor="none", zorder=3,
                      label="Pareto front of the medians (nothing cheaper is as accurate)")
        axis.set_xscale("log")
        xs = [row[key] for row in measured]
        # Plain numbers (20, 30, 100) rather than 2×10^1; minor ticks labelled only within one decade,
        # where there are few of them.
        plain = FuncFormatter(lambda value, _: f"{value:g}")
        axis.xaxis.set_major_formatter(plain)
        axis.xaxis.set_minor_formatter(plain if max(xs) / min(xs) < 10 else NullFormatter())
        axis.legend(fontsize=8, loc="best")
    _title(figure, f"Error vs inference cost — {title}")
    save_figure(figure, path)


def _validation_errors(run_dir: str) -> dict[int, float]:
    with (Path(run_dir) / "metrics.csv").open(encoding="utf-8") as file:
        return {int(row["epoch"]): float(row["val/top1_error"]) for row in csv.DictReader(file)
                if row["val/top1_error"]}


def plot_curves(per_seed: Sequence[Row], path: Path, title: str) -> None:
    """Validation top-1 error per epoch, one panel per architecture, one line per setting (mean over seeds,
    the band spanning the seeds)."""
    finished = [row for row in per_seed if row["status"] == "ok" and row.get("run_dir")]
    names = list(dict.fromkeys(row["name"] for row in finished)) or ["no finished runs"]
    settings = list(dict.fromkeys(row["setting"] for row in finished))
    figure = Figure(figsize=(5 * len(names), 4.5))
    axes = figure.subplots(1, len(names), squeeze=False)
    for axis, name in zip(axes[0], names, strict=True):
        for index, setting in enumerate(settings):
            curves = [_validation_errors(row["run_dir"]) for row in finished
                      if row["name"] == name and row["setting"] == setting]
            epochs = sorted(set.intersection(*(set(curve) for curve in curves))) if curves else []
            if not epochs:
                continue
            values = [[curve[epoch] for curve in curves] for epoch in epochs]
            color = SETTING_COLORS[index % len(SETTING_COLORS)]
            seeds = f", {len(curves)} seeds" if len(curves) > 1 else ""
            axis.plot(epochs, [sum(v) / len(v) for v in values], marker="o", color=color,
                      label=(setting or "validation top-1 error") + seeds)
            if len(curves) > 1:
                axis.fill_between(epochs, [min(v) for v in values], [max(v) for v in values], color=color, alpha=0.2)
        axis.set(title=name, xlabel="epoch", ylabel="validation top-1 error (%)")
        axis.grid(alpha=0.3)
        if axis.lines:
            axis.legend(fontsize=8)
        else:
            _empty(axis, "no finished runs")
    _title(figure, f"Validation error per epoch — {title}")
    save_figure(figure, path)
