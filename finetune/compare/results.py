"""Result rows of finished runs: their held-out errors, grouped over seeds, and paired tests against the best."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

import zoo
from finetune.compare.speed import run_speed
from finetune.config import to_dict, uncompared_settings
from finetune.results.heldout import PREDICTIONS_FILE, read_predictions
from finetune.results.records import RunSummary
from finetune.results.stats import mcnemar, wilson_interval
from zoo.spec import ArchSpec

Row = dict[str, Any]

RESULT_COLUMNS = (
    "name", "setting", "weights", "image_size", "depth", "params", "gflops", "ilsvrc_year", "ilsvrc_top5_error",
    "imagenet_top1_error", "imagenet_top5_error", "seeds", "num_test", "test_top1_error", "test_top1_error_ci95",
    "test_top1_error_std", "num_val", "val_top1_error", "val_top1_error_ci95", "val_top1_error_std", "k", "topk_error",
    "reported_on",
    "chance_top1_error", "learned", "p_vs_best", "train_seconds", "train_images_per_second", "predict_ms_per_image",
    "predict_ms_per_image_iqr", "predict_other_load",
    "predict_images_per_second", "predict_batch_size", "predict_device", "status",
    "reason", "run_dir",
)
REGISTRY_KEYS = ("name", "depth", "params", "gflops", "ilsvrc_year", "ilsvrc_top5_error")
UNCOMPARED_SETTINGS = uncompared_settings()


def _imagenet_errors(spec: ArchSpec, weights: str) -> tuple[float | None, float | None]:
    """ImageNet top-1 / top-5 error of the weights a run started from; none for random or own weights."""
    if spec.weights is None or weights == "none":
        return None, None
    tag = spec.weights.default_tag if weights == "default" else weights
    info = next((info for info in spec.weights.available() if info.tag == tag), None)
    return (info.top1_error, info.top5_error) if info else (None, None)


def _registry_row(name: str, weights: str) -> Row:
    spec = zoo.get_spec(name)
    known = zoo.summarize(spec)
    row: Row = dict.fromkeys(RESULT_COLUMNS)
    row.update({key: known[key] for key in REGISTRY_KEYS})
    row["imagenet_top1_error"], row["imagenet_top5_error"] = _imagenet_errors(spec, weights)
    return row


def cost_at(arch: str, num_classes: int, image_size: int) -> tuple[int, float]:
    """Parameters and GFLOPs per image (2 per multiply-accumulate) of ``arch`` with a ``num_classes`` head at
    ``image_size``: the network a run trained, at the size it trained (on the meta device: nothing allocated)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = zoo.create_model(arch, num_classes).eval()
        image = torch.empty(1, 3, image_size, image_size)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(image)
    return sum(parameter.numel() for parameter in model.parameters()), round(counter.get_total_flops() / 1e9, 4)


def label(row: Row) -> str:
    """How findings name a row: the architecture, and its setting when it has one."""
    return f"{row['name']} [{row['setting']}]" if row.get("setting") else row["name"]


def headline_error(row: Row) -> float | None:
    """The error a row is judged by: test when the run held test images out, else validation."""
    return row["test_top1_error"] if row["test_top1_error"] is not None else row["val_top1_error"]


def headline_interval(row: Row) -> list[float] | None:
    return row["test_top1_error_ci95"] if row["test_top1_error"] is not None else row["val_top1_error_ci95"]


def headline_std(row: Row) -> float | None:
    """The standard deviation of the headline error over a row's seeds; None for a single run."""
    return row.get("test_top1_error_std") if row["test_top1_error"] is not None else row.get("val_top1_error_std")


def failed_row(name: str, reason: str, weights: str, setting: str = "", seed: int | None = None) -> Row:
    """The row of an architecture whose run failed: its registry figures and the one-line reason."""
    return {**_registry_row(name, weights), "setting": setting, "weights": weights,
            "seeds": "" if seed is None else str(seed), "status": "failed", "reason": reason}


def run_row(run_dir: Path, *, setting: str = "", save_speed: bool = False, measure_speed: bool = True) -> Row:
    """The row of a finished run: registry figures, its held-out errors, training and prediction speed."""
    summary = RunSummary.read(run_dir)
    row = {
        **_registry_row(summary.arch, summary.weights),
        "setting": setting,
        "weights": summary.weights,
        "image_size": summary.image_size,
        # The fine-tuned network at the size the run used, not the 1000-class network at its default size.
        **dict(zip(("params", "gflops"), cost_at(summary.arch, summary.num_classes, summary.image_size),
                   strict=True)),
        "seeds": str(summary.seed),
        **{key: getattr(summary, key) for key in ("num_test", "test_top1_error", "test_top1_error_ci95", "num_val",
                                                  "val_top1_error", "val_top1_error_ci95", "k", "reported_on",
                                                  "chance_top1_error", "learned", "train_seconds",
                                                  "train_images_per_second")},
        "topk_error": summary.topk(summary.reported_on),
        "status": "ok",
        "run_dir": str(run_dir),
    }
    if measure_speed:
        speed = run_speed(run_dir, summary, save=save_speed)
        iqr = None if speed.ms_per_image_low is None else [speed.ms_per_image_low, speed.ms_per_image_high]
        row.update({"predict_ms_per_image": speed.ms_per_image, "predict_ms_per_image_iqr": iqr,
                    "predict_other_load": speed.other_load,
                    "predict_images_per_second": speed.images_per_second, "predict_batch_size": speed.batch_size,
                    "predict_device": speed.device})
    return row


def rows_from_runs(run_dirs: Sequence[Path]) -> list[Row]:
    """One row per finished run, named by the settings in which the runs differ (seeds aside)."""
    configs = [to_dict(RunSummary.read(run_dir).config) for run_dir in run_dirs]
    differ = settings_that_differ(configs)
    # .get: runs of different zoo versions may lack settings added since.
    return [run_row(run_dir, setting=", ".join(f"{key}={_flatten(config).get(key)}" for key in differ))
            for run_dir, config in zip(run_dirs, configs, strict=True)]


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def settings_that_differ(configs: Sequence[dict[str, Any]]) -> list[str]:
    """Dotted keys of the run settings (``RunConfig`` as a dict) that are not the same in every config."""
    flat = [_flatten(config) for config in configs]
    keys = sorted({key for values in flat for key in values} - UNCOMPARED_SETTINGS)
    return [key for key in keys if len({repr(values.get(key)) for values in flat}) > 1]


def _known(values: Sequence[float | None]) -> list[float] | None:
    """``values`` when every one is known; a seed without the figure makes the aggregate unknown."""
    known = [value for value in values if value is not None]
    return known if len(known) == len(values) else None


def _mean(values: Sequence[float | None]) -> float | None:
    known = _known(values)
    return round(statistics.fmean(known), 4) if known else None


def _std(values: Sequence[float | None]) -> float | None:
    known = _known(values)
    return round(statistics.stdev(known), 4) if known and len(known) >= 2 else None


def _interval_of_mean(error: float | None, count: int | None) -> list[float] | None:
    """The Wilson interval of a mean error over ``count`` images: the test set's share of the uncertainty."""
    if error is None or not count:
        return None
    return [round(bound, 4) for bound in wilson_interval(round(error * count / 100), count)]


def _aggregate(members: Sequence[Row]) -> Row:
    """One row for the seeds of one architecture and setting: means, standard deviations, every seed's verdict."""
    if len(members) == 1:
        return {**members[0], "test_top1_error_std": None, "val_top1_error_std": None}
    seeds = ",".join(member["seeds"] for member in members)
    failed = [member for member in members if member["status"] != "ok"]
    if failed:  # an average over the seeds that happened to finish would not be the row's figure
        reasons = "; ".join(f"seed {member['seeds']}: {member['reason']}" for member in failed)
        return {**failed[0], "seeds": seeds, "reason": reasons}
    timed = next((member for member in members if member.get("predict_ms_per_image") is not None), members[0])
    row = {**timed, "seeds": seeds, "run_dir": None}
    for key in ("test_top1_error", "val_top1_error", "topk_error", "train_seconds", "train_images_per_second"):
        row[key] = _mean([member[key] for member in members])
    row["test_top1_error_std"] = _std([member["test_top1_error"] for member in members])
    row["val_top1_error_std"] = _std([member["val_top1_error"] for member in members])
    row["test_top1_error_ci95"] = _interval_of_mean(row["test_top1_error"], row["num_test"])
    row["val_top1_error_ci95"] = _interval_of_mean(row["val_top1_error"], row["num_val"])
    row["learned"] = all(member["learned"] for member in members)
    return row


def best_row(rows: Sequence[Row]) -> Row | None:
    """The finished row with the lowest headline error, among those that learned when any did, and among
    those measured on a test split when any were (an optimistic validation error never wins against one)."""
    finished = [row for row in rows if row["status"] == "ok" and headline_error(row) is not None]
    finished = [row for row in finished if row["reported_on"] == "test"] or finished
    candidates = [row for row in finished if row["learned"]] or finished
    return min(candidates, key=lambda row: headline_error(row) or 0.0, default=None)  # all known, filtered above


def _correct_by_image(run_dir: str | None) -> dict[str, bool] | None:
    path = Path(run_dir) / PREDICTIONS_FILE if run_dir else None
    return read_predictions(path) if path is not None and path.is_file() else None


def paired_p_value(best: Row, other: Row) -> float | None:
    """Exact McNemar p-value of ``best`` against ``other`` on their test images, as evidence that ``best`` is
    better: 1 when ``other`` got more of the disputed images right. None unless both hold the same images."""
    best_correct, other_correct = _correct_by_image(best["run_dir"]), _correct_by_image(other["run_dir"])
    if best_correct is None or other_correct is None or best_correct.keys() != other_correct.keys():
        return None
    images = sorted(best_correct)
    test = mcnemar([best_correct[i] for i in images], [other_correct[i] for i in images])
    # With several seeds a row can be the better one in some seed: that seed is no evidence for the best.
    return test.p_value if test.only_first_right >= test.only_second_right else 1.0


def _key(row: Row) -> tuple[str, str]:
    return row["name"], row["setting"]


def summarize(per_seed: Sequence[Row]) -> list[Row]:
    """Rows grouped over seeds, each with ``p_vs_best``: its McNemar p-value against the best row.

    With several seeds each seed's run is tested against the best row's run of the same seed, and the
    row keeps the largest p-value: a difference counts only if it holds in every seed. ``per_seed``
    rows get their own seed's p-value.
    """
    groups: dict[tuple[str, str], list[Row]] = {}
    for row in per_seed:
        groups.setdefault(_key(row), []).append(row)
    rows = [_aggregate(members) for members in groups.values()]
    best = best_row(rows)
    if best is None:
        return rows
    best_runs = {run["seeds"]: run for run in groups[_key(best)]}
    for row in rows:
        runs = [run for run in groups[_key(row)] if run["status"] == "ok"]
        if row is best or row["status"] != "ok":
            continue
        p_values = []
        for run in runs:
            # Single runs pair whatever their seeds; several seeds pair seed by seed.
            alone = len(runs) == len(best_runs) == 1
            partner = next(iter(best_runs.values())) if alone else best_runs.get(run["seeds"])
            run["p_vs_best"] = paired_p_value(partner, run) if partner is not None else None
            p_values.append(run["p_vs_best"])
        row["p_vs_best"] = None if not p_values or None in p_values else max(p_values)
    return rows


