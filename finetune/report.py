"""A comparison's results from run folders: results.json / .csv, the two plots, and report.md with findings."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import zoo
from finetune.compare_plots import plot_depth_vs_error, plot_error_vs_cost
from finetune.speed import run_speed
from zoo.spec import ArchSpec

Row = dict[str, Any]

RESULT_COLUMNS = (
    "name", "depth", "params", "gflops", "ilsvrc_year", "ilsvrc_top5_error", "imagenet_top1_error",
    "imagenet_top5_error", "top1_error", "top5_error", "top5_k", "train_seconds", "train_images_per_second",
    "predict_ms_per_image", "predict_images_per_second", "predict_batch_size", "predict_device", "status",
    "reason", "run_dir",
)
REGISTRY_KEYS = ("name", "depth", "params", "gflops", "ilsvrc_year", "ilsvrc_top5_error")
NEAR_BEST_POINTS = 1.0  # "as good as the best" for the cheapest-model finding, in error percentage points
# Settings that say where a run lives, not how it was trained.
UNCOMPARED_SETTINGS = ("out", "model.arch")


def read_summary(run_dir: Path) -> dict[str, Any]:
    """The ``summary.json`` of a finished run."""
    path = run_dir / "summary.json"
    if not path.is_file():
        hint = f": for a comparison folder pass its run folders, {run_dir / 'runs'}/*" if (run_dir / "runs").is_dir() else ""
        raise zoo.ZooError(f"{run_dir} holds no finished run (no summary.json){hint}")
    return json.loads(path.read_text(encoding="utf-8"))


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


def failed_row(name: str, reason: str, weights: str) -> Row:
    """The row of an architecture whose run failed: its registry figures and the one-line reason."""
    return {**_registry_row(name, weights), "status": "failed", "reason": reason}


def run_row(run_dir: Path, *, save_speed: bool = False) -> Row:
    """The row of a finished run: registry figures, its errors, training and prediction speed."""
    summary = read_summary(run_dir)
    speed = run_speed(run_dir, summary, save=save_speed)
    return {
        **_registry_row(summary["arch"], summary["weights"]),
        "top1_error": summary["val_top1_error"],
        "top5_error": summary["val_top5_error"],
        "top5_k": summary["top5_k"],
        "train_seconds": summary["train_seconds"],
        "train_images_per_second": summary["train_images_per_second"],
        "predict_ms_per_image": speed.ms_per_image,
        "predict_images_per_second": speed.images_per_second,
        "predict_batch_size": speed.batch_size,
        "predict_device": speed.device,
        "status": "ok",
        "run_dir": str(run_dir),
    }


def rows_from_runs(run_dirs: Sequence[Path]) -> list[Row]:
    """One row per finished run; an architecture that appears twice is told apart by its folder name."""
    rows = [run_row(run_dir) for run_dir in run_dirs]
    names = [row["name"] for row in rows]
    for row, run_dir in zip(rows, run_dirs):
        if names.count(row["name"]) > 1:
            row["name"] = f"{row['name']} ({run_dir.name})"
    return rows


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
    keys = sorted({key for values in flat for key in values} - set(UNCOMPARED_SETTINGS))
    return [key for key in keys if len({repr(values.get(key)) for values in flat}) > 1]


def _setting(configs: Sequence[dict[str, Any]], section: str, key: str) -> str:
    values = list(dict.fromkeys(str(config[section][key]) for config in configs))
    return "/".join(values)


def title_for(configs: Sequence[dict[str, Any]]) -> str:
    """What data and what budget, e.g. ``images: 5 epochs, 224 px, weights default, seed 0``."""
    data = "/".join(dict.fromkeys(Path(config["data"]["path"]).name for config in configs))
    epochs = _setting(configs, "trainer", "epochs")
    budget = [f"{epochs} epoch{'' if epochs == '1' else 's'}"]
    if any(config["trainer"]["max_steps"] != -1 for config in configs):
        budget.append(f"at most {_setting(configs, 'trainer', 'max_steps')} steps")
    size = _setting(configs, "data", "image_size")
    budget.append("each network's default input size" if size == "None" else f"{size} px")
    budget.append(f"weights {_setting(configs, 'model', 'weights')}")
    if any(config["optim"]["freeze"] != "none" for config in configs):
        budget.append(f"freeze {_setting(configs, 'optim', 'freeze')}")
    budget.append(f"seed {_setting(configs, 'trainer', 'seed')}")
    return f"{data}: {', '.join(budget)}"


def _spearman(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Rank correlation, or None when either side has no spread to rank."""
    if len(set(xs)) < 2 or len(set(ys)) < 2:
        return None
    from scipy.stats import spearmanr  # scipy comes with scikit-learn; imported only when a report is made

    return float(spearmanr(xs, ys).statistic)


def _depth_finding(finished: Sequence[Row]) -> str:
    rho = _spearman([row["depth"] for row in finished], [row["top1_error"] for row in finished])
    if rho is None:
        return "Depth cannot be judged here: the finished models share one depth or one error."
    over = f"Spearman ρ between depth and error = {rho:+.2f} over {len(finished)} models"
    if rho <= -0.5:
        finding = f"Deeper was better here: error falls with depth ({over})."
    elif rho >= 0.5:
        finding = f"Deeper was not better here: error rises with depth ({over})."
    else:
        finding = f"Depth made no consistent difference here ({over})."
    imagenet = [row for row in finished if row["imagenet_top1_error"] is not None]
    imagenet_rho = _spearman([row["depth"] for row in imagenet], [row["imagenet_top1_error"] for row in imagenet])
    if imagenet_rho is not None:
        finding += f" On ImageNet the same weights give ρ = {imagenet_rho:+.2f}."
    return finding


def findings(rows: Sequence[Row], configs: Sequence[dict[str, Any]]) -> list[str]:
    """Sentences drawn from the numbers: best model, cheapest near-best model, whether depth helped."""
    finished = [row for row in rows if row["status"] == "ok" and row["top1_error"] is not None]
    sentences = []
    differ = settings_that_differ(configs)
    if differ:
        sentences.append(f"These runs differ in {', '.join(differ)}: the comparison is not like for like.")
    if finished:
        summary = read_summary(Path(finished[0]["run_dir"]))
        sentences.append(
            f"Trained on {summary['num_train']} and validated on {summary['num_val']} images of "
            f"{summary['num_classes']} classes; errors are on the validation images."
        )
        best = min(finished, key=lambda row: (row["top1_error"], row["predict_ms_per_image"]))
        sentences.append(f"Best: {best['name']} with {best['top1_error']:.1f}% top-1 error.")
        near = [row for row in finished if row["top1_error"] <= best["top1_error"] + NEAR_BEST_POINTS]
        cheapest = min(near, key=lambda row: row["predict_ms_per_image"])
        if cheapest is best:
            sentences.append(f"No model within {NEAR_BEST_POINTS:g} point of it is cheaper to run "
                             f"({best['predict_ms_per_image']:.2f} ms per image).")
        else:
            sentences.append(
                f"Cheapest within {NEAR_BEST_POINTS:g} point of the best: {cheapest['name']} "
                f"({cheapest['top1_error']:.1f}%, {cheapest['predict_ms_per_image']:.2f} ms per image against "
                f"{best['predict_ms_per_image']:.2f} ms, "
                f"{best['predict_ms_per_image'] / cheapest['predict_ms_per_image']:.1f}× faster)."
            )
        sentences.append(_depth_finding(finished))
        sentences.append(f"Inference timed on {finished[0]['predict_device']}: ms per image at batch 1, "
                         f"images/s at batch {finished[0]['predict_batch_size']}.")
    else:
        sentences.append("No architecture finished, so there is nothing to compare.")
    sentences += [f"{row['name']} failed: {row['reason']}" for row in rows if row["status"] == "failed"]
    return sentences


def _write_csv(rows: Sequence[Row], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=RESULT_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def write_outputs(rows: Sequence[Row], out: Path, *, configs: Sequence[dict[str, Any]], table: str) -> None:
    """results.json, results.csv, depth_vs_error.png, error_vs_cost.png and report.md in ``out``.

    ``configs``: the run settings behind the rows (one shared config for a comparison); ``table``: the
    results table in Markdown, rendered by the caller the way it prints it.
    """
    out.mkdir(parents=True, exist_ok=True)
    title = title_for(configs)
    (out / "results.json").write_text(json.dumps(list(rows), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    _write_csv(rows, out / "results.csv")
    plot_depth_vs_error(rows, out / "depth_vs_error.png", title)
    plot_error_vs_cost(rows, out / "error_vs_cost.png", title)
    lines = [
        f"# {title}", "",
        *(f"- {sentence}" for sentence in findings(rows, configs)), "",
        "## Results", "",
        table, "",
        "Errors in %. Top-1 / top-k error: this dataset's validation images, best checkpoint of each run. "
        "ImageNet: single-crop errors of the weights each run started from. ILSVRC: the family's "
        "competition entry (ensembles, test set). GFLOPs: 2 × multiply-accumulates per image at the "
        "architecture's default input size.", "",
        "## Depth vs error", "", "![depth vs error](depth_vs_error.png)", "",
        "## Error vs inference cost", "", "![error vs cost](error_vs_cost.png)", "",
    ]
    (out / "report.md").write_text("\n".join(lines), encoding="utf-8")
