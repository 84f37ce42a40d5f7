"""The sentences of a comparison's report: only what the numbers support.

A difference between two rows is called real only when the exact McNemar test on the same test images
says so (p < 0.05), a depth trend only when Spearman's test does; rows that did not learn are named
and left out of both; speed is ranked only outside the spread of its timing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from finetune.compare.results import (
    Row,
    best_row,
    headline_error,
    headline_interval,
    headline_std,
    label,
    settings_that_differ,
)
from finetune.compare.speed import Speed
from finetune.results.records import RunSummary
from finetune.results.stats import SIGNIFICANCE, smallest_spearman_p, spearman


def format_p(p_value: float) -> str:
    """``p = 0.002``, ``p = 0.41``, ``p < 0.001``: two significant digits."""
    return "p < 0.001" if p_value < 0.001 else f"p = {p_value:.2g}"


def _error(row: Row) -> str:
    interval = headline_interval(row)
    assert interval is not None  # only finished rows are described, and each has its interval
    low, high = interval
    std = headline_std(row)
    spread = f" ± {std:.1f} (sd over seeds {row['seeds']})" if std is not None else ""
    return f"{headline_error(row):.1f}%{spread} (95% CI {low:.1f}-{high:.1f})"


def _seeds(row: Row) -> int:
    return len(row["seeds"].split(",")) if row.get("seeds") else 1


def _data_sentences(per_seed: Sequence[Row], rows: Sequence[Row]) -> list[str]:
    summary = RunSummary.read(Path(next(row for row in per_seed if row["status"] == "ok")["run_dir"]))
    if summary.num_test:
        sentences = [
            f"Trained on {summary.num_train} images, validated on {summary.num_val} (they chose each "
            f"checkpoint) and tested once on {summary.num_test} images of {summary.num_classes} classes "
            "held out from the start. Errors are test errors with 95% Wilson intervals; p-values are exact "
            "McNemar tests on the same test images."
        ]
    else:
        sentences = [
            f"No test images were held out: errors are on the {summary.num_val} validation images that chose "
            "each checkpoint, so they are optimistic, and no paired test is made."
        ]
    if any(_seeds(row) > 1 for row in rows):
        sentences.append("Each row is the mean ± standard deviation over its seeds; its p-value is the largest of "
                         "its per-seed p-values, so a difference counts only if it holds in every seed.")
    return sentences


def _versus_best(best: Row, row: Row, num_test: int) -> str:
    p_value = row.get("p_vs_best")
    if p_value is None:
        return f"{label(row)} ({_error(row)}) cannot be tested against {label(best)}: they share no test predictions."
    seeds = _seeds(row)
    if p_value < SIGNIFICANCE:
        where = f"in every one of {seeds} seeds (largest McNemar {format_p(p_value)})" if seeds > 1 \
            else f"on these {num_test} test images (McNemar {format_p(p_value)})"
        return f"{label(best)} is better than {label(row)} ({_error(row)}) {where}."
    where = f"in at least one of {seeds} seeds (largest {format_p(p_value)})" if seeds > 1 \
        else f"here ({format_p(p_value)})"
    return f"{label(best)} and {label(row)} ({_error(row)}) are not distinguishable {where}."


def _speed(row: Row) -> Speed | None:
    if row.get("predict_ms_per_image") is None:
        return None
    low, high = row.get("predict_ms_per_image_iqr") or (None, None)
    return Speed(row["predict_ms_per_image"], row["predict_images_per_second"], row["predict_batch_size"],
                 row["predict_device"], low, high, row.get("predict_other_load"))


def _latency_warnings(rows: Sequence[Row]) -> list[str]:
    """Latencies not to rely on: timed while other processes used the cores, or inside each other's spread."""
    timed = [(row, speed) for row in rows if (speed := _speed(row)) is not None]
    sentences = []
    loaded = [f"{label(row)} ({speed.other_load:.1f} cores busy)" for row, speed in timed if speed.loaded]
    if loaded:
        sentences.append("Unreliable latencies: other processes competed for the cores while "
                         f"{', '.join(loaded)} {'was' if len(loaded) == 1 else 'were'} timed; time again on a quiet "
                         "machine before ranking by speed.")
    overlapping = [f"{label(a)} and {label(b)}" for i, (a, first) in enumerate(timed) for b, second in timed[i + 1:]
                   if first.ms_per_image_low is not None and second.ms_per_image_low is not None
                   and not first.clearly_faster_than(second) and not second.clearly_faster_than(first)]
    if overlapping:
        sentences.append(f"Latency intervals overlap for {'; '.join(overlapping)}: their speeds are not "
                         "distinguishable here.")
    return sentences


def _cheapest_finding(best: Row, rows: Sequence[Row]) -> str | None:
    best_speed = _speed(best)
    if best_speed is None:
        return None
    as_good = [row for row in rows if row.get("p_vs_best") is not None and row["p_vs_best"] >= SIGNIFICANCE]
    faster = [(row, speed) for row in as_good if (speed := _speed(row)) and speed.clearly_faster_than(best_speed)]
    if not faster:
        return (f"No model indistinguishable from {label(best)} is measurably faster to run: latencies count as "
                "different only when their interquartile ranges do not overlap.")
    row, speed = min(faster, key=lambda pair: pair[1].ms_per_image)
    return (f"{label(row)} is not distinguishable from {label(best)} ({format_p(row['p_vs_best'])}) and is faster to "
            f"run: {speed.ms_per_image:.2f} ms per image "
            f"(IQR {speed.ms_per_image_low:.2f}-{speed.ms_per_image_high:.2f}) "
            f"against {best_speed.ms_per_image:.2f} ms ({best_speed.ms_per_image_low:.2f}-"
            f"{best_speed.ms_per_image_high:.2f}), {best_speed.ms_per_image / speed.ms_per_image:.1f}× faster.")


def _trend_sentence(trend: Any, count: int, what: str) -> str:
    if trend is None:
        return f"Too few {what} with different depths ({count}) to judge a depth trend."
    stated = f"Spearman ρ = {trend.rho:+.2f}, {format_p(trend.p_value)}, over {trend.count} {what}"
    if not trend.significant:
        floor = smallest_spearman_p(trend.count)
        if floor >= SIGNIFICANCE:  # no ordering of this few models could have been significant
            return (f"No significant depth trend here ({stated}): with {trend.count} {what} the smallest p any "
                    f"ordering can give is {floor:.2g}, so no trend could reach p < {SIGNIFICANCE:g}; compare 5 or "
                    "more architectures of different depths to test one.")
        return f"No significant depth trend here ({stated})."
    direction = "better here: error falls" if trend.rho < 0 else "worse here: error rises"
    return f"Deeper was {direction} with depth ({stated})."


def _depth_findings(rows: Sequence[Row]) -> list[str]:
    sentences = []
    settings = list(dict.fromkeys(row["setting"] for row in rows))
    for setting in settings:
        finished = [row for row in rows if row["setting"] == setting and row["status"] == "ok"]
        if len({row["name"] for row in finished}) < 2:  # one architecture: no depth to compare
            continue
        learned = [row for row in finished if row["learned"]]
        # Every row that learned has an error: its interval lay below chance.
        points = [(row["depth"], error) for row in learned if (error := headline_error(row)) is not None]
        trend = spearman([depth for depth, _ in points], [error for _, error in points])
        sentence = _trend_sentence(trend, len(learned), "models that learned")
        if setting:
            sentence = f"[{setting}] {sentence}"
        left_out = [row["name"] for row in finished if not row["learned"]]
        if left_out:
            sentence += f" Left out as they did not learn: {', '.join(left_out)}."
        imagenet = [row for row in learned if row["imagenet_top1_error"] is not None]
        imagenet_trend = spearman([row["depth"] for row in imagenet], [row["imagenet_top1_error"] for row in imagenet])
        if imagenet_trend is not None:
            sentence += (f" On ImageNet the same weights give ρ = {imagenet_trend.rho:+.2f} "
                         f"({format_p(imagenet_trend.p_value)}).")
        sentences.append(sentence)
    return sentences


def findings(rows: Sequence[Row], per_seed: Sequence[Row], configs: Sequence[dict[str, Any]]) -> list[str]:
    """Sentences drawn from the numbers: which rows learned, the best, what is distinguishable from it,
    the cheapest model as good as it, and whether depth helped."""
    sentences = []
    differ = settings_that_differ(configs)
    if differ:
        sentences.append(f"These runs differ in {', '.join(differ)}: each row names its setting, and only rows of "
                         "one setting compare architectures like for like.")
    finished = [row for row in rows if row["status"] == "ok" and headline_error(row) is not None]
    if not finished:
        sentences.append("No architecture finished, so there is nothing to compare.")
    else:
        sentences += _data_sentences(per_seed, rows)
        for row in finished:
            if not row["learned"]:
                sentences.append(f"{label(row)} did not learn: its {row['reported_on']} error {_error(row)} does not "
                                 f"lie below chance, {row['chance_top1_error']:.1f}% (always the most frequent class).")
        best = best_row(finished)
        assert best is not None  # finished is not empty
        if best["learned"]:
            num_test = best["num_test"] or 0
            sentences.append(f"Lowest {best['reported_on']} error: {label(best)}, {_error(best)}.")
            sentences += [_versus_best(best, row, num_test) for row in finished if row is not best and row["learned"]]
            cheapest = _cheapest_finding(best, [row for row in finished if row["learned"]])
            if cheapest:
                sentences.append(cheapest)
        else:
            sentences.append("No architecture learned, so none is better than another here.")
        sentences += _depth_findings(rows)
        timed = next((row for row in finished if row.get("predict_device")), None)
        if timed:
            sentences.append(f"Inference timed on {timed['predict_device']}: ms per image at batch 1 (median and "
                             f"interquartile range of timing blocks), images/s at batch {timed['predict_batch_size']}.")
            sentences += _latency_warnings(finished)
    sentences += [f"{label(row)} failed: {row['reason']}" for row in rows if row["status"] == "failed"]
    return sentences
