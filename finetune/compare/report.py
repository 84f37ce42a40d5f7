"""A comparison's report from its result rows: results.json / .csv, three plots, and report.md with findings."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from finetune.compare.findings import findings
from finetune.compare.plots import plot_curves, plot_depth_vs_error, plot_error_vs_cost
from finetune.compare.results import RESULT_COLUMNS, Row, headline_error, headline_interval, headline_std
from zoo._io import write_csv_atomic, write_error, write_text_atomic
from zoo.tables import markdown_table

COLUMNS = {
    "name": "name", "setting": "setting", "weights": "weights", "depth": "depth", "error_text": "top-1 err % (95% CI)",
    "std_shown": "sd (seeds)", "val_top1_error": "val err %", "topk_error": "top-k err %", "k": "k",
    "chance_top1_error": "chance %", "learned": "learned", "p_vs_best": "p vs best",
    "latency_text": "ms/img, batch 1 (IQR)", "status": "status",
}
# The report's table adds the registry's figures and the training and throughput columns.
REPORT_COLUMNS = {
    **COLUMNS, "params_m": "params (M)", "gflops": "GFLOPs", "imagenet_top1_error": "ImageNet top-1 err %",
    "train_seconds": "train s", "predict_images_per_second": "img/s (batch)", "reason": "reason",
}


def _setting(configs: Sequence[dict[str, Any]], section: str, key: str) -> str:
    values = list(dict.fromkeys(str(config[section][key]) for config in configs))
    return "/".join(values)


def title_for(configs: Sequence[dict[str, Any]], image_sizes: Sequence[int] = (), weights: Sequence[str] = ()) -> str:
    """What data and what budget, e.g. ``images: 5 epochs, 224 px, weights default, seed 0``.

    ``image_sizes``: the sizes the runs used (a config's ``None`` means each network's own size); ``weights``:
    the weights they started from (a config's ``default`` is none for a network without pretrained weights).
    """
    data = "/".join(dict.fromkeys(Path(config["data"]["path"]).name for config in configs))
    epochs = _setting(configs, "trainer", "epochs")
    budget = ["epochs chosen per run" if epochs == "None" else f"{epochs} epoch{'' if epochs == '1' else 's'}"]
    if any(config["trainer"]["max_steps"] != -1 for config in configs):
        budget.append(f"at most {_setting(configs, 'trainer', 'max_steps')} steps")
    sizes = "/".join(dict.fromkeys(str(size) for size in image_sizes if size is not None))
    configured = {config["data"]["image_size"] for config in configs}
    budget.append(f"{sizes} px" if sizes else "each network's default input size" if configured == {None}
                  else f"{'/'.join(str(size) for size in configured if size is not None)} px")
    used = "/".join(dict.fromkeys(weights)) if weights else _setting(configs, 'model', 'weights')
    budget.append(f"weights {used}")
    if any(config["optim"]["freeze"] != "none" for config in configs):
        budget.append(f"freeze {_setting(configs, 'optim', 'freeze')}")
    budget.append(f"seed {_setting(configs, 'trainer', 'seed')}")
    return f"{data}: {', '.join(budget)}"


def shown_row(row: dict[str, Any]) -> dict[str, Any]:
    """A results row with the columns a person reads: millions of parameters, errors with their intervals."""
    shown = {**row, "params_m": row["params"] / 1e6 if row["params"] is not None else None,
             "std_shown": headline_std(row) if row["status"] == "ok" else None}
    error, interval = headline_error(row), headline_interval(row)
    if error is not None and interval is not None:
        split = "" if row["reported_on"] == "test" else " val"
        shown["error_text"] = f"{error:.2f} ({interval[0]:.2f}-{interval[1]:.2f}){split}"
    if row.get("predict_ms_per_image") is not None:
        low, high = row.get("predict_ms_per_image_iqr") or (None, None)
        spread = f" ({low:.2f}-{high:.2f})" if low is not None else ""
        shown["latency_text"] = f"{row['predict_ms_per_image']:.2f}{spread}"
    if row.get("p_vs_best") is not None:
        shown["p_vs_best"] = "< 0.001" if row["p_vs_best"] < 0.001 else f"{row['p_vs_best']:.2g}"
    return shown


def _cell(value: Any) -> Any:
    return "-".join(str(bound) for bound in value) if isinstance(value, list) else value


def _write_csv(rows: Sequence[Row], path: Path) -> None:
    write_csv_atomic(path, RESULT_COLUMNS, ([_cell(row.get(key)) for key in RESULT_COLUMNS] for row in rows))


def write_outputs(rows: Sequence[Row], per_seed: Sequence[Row], out: Path, *,
                  configs: Sequence[dict[str, Any]]) -> None:
    """results.json/.csv (``rows``, from ``summarize``), results_per_seed.csv, depth_vs_error.png,
    error_vs_cost.png, curves.png and report.md in ``out``; ``configs``: the run settings behind the rows."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise write_error(out / "results.json", error) from error
    title = title_for(configs, [row["image_size"] for row in per_seed if row.get("image_size")],
                      [row["weights"] for row in per_seed if row.get("weights")])
    results = [{key: row.get(key) for key in RESULT_COLUMNS} for row in rows]
    # Atomic writes: a full or read-only disk is one line (DiskError), and no half-written file is left.
    write_text_atomic(out / "results.json", json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    _write_csv(rows, out / "results.csv")
    _write_csv(per_seed, out / "results_per_seed.csv")
    plot_depth_vs_error(rows, out / "depth_vs_error.png", title)
    plot_error_vs_cost(rows, out / "error_vs_cost.png", title)
    plot_curves(per_seed, out / "curves.png", title)
    lines = [
        f"# {title}", "",
        *(f"- {sentence}" for sentence in findings(rows, per_seed, configs)), "",
        "## Results", "",
        markdown_table([shown_row(row) for row in rows], REPORT_COLUMNS), "",
        "Errors in %. Test: images held out from the start, measured once on each run's best checkpoint, with "
        "the 95% Wilson interval; val: the images that chose that checkpoint (optimistic). p vs best: exact "
        "McNemar test against the best row on the same test images (with several seeds, the largest of the "
        "per-seed p-values). Chance: always predicting the most frequent class. ImageNet: single-crop errors "
        "of the weights each run started from. ILSVRC: the family's competition entry (ensembles, test set). "
        "GFLOPs: 2 × multiply-accumulates per image at the architecture's default input size. Per-seed rows: "
        "`results_per_seed.csv`.", "",
        "## Depth vs error", "", "![depth vs error](depth_vs_error.png)", "",
        "## Error vs inference cost", "", "![error vs cost](error_vs_cost.png)", "",
        "## Validation error per epoch", "", "![validation curves](curves.png)", "",
    ]
    write_text_atomic(out / "report.md", "\n".join(lines))
