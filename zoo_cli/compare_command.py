"""``zoo compare`` (several architectures fine-tuned alike) and ``zoo report`` (the same outputs from runs)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from zoo_cli.finetune_command import add_training_flags, overrides_from_flags
from zoo_cli.output import markdown_table, print_table

COLUMNS = {
    "name": "name", "depth": "depth", "params_m": "params (M)", "gflops": "GFLOPs",
    "imagenet_top1_error": "ImageNet top-1 err %", "top1_error": "top-1 err %", "top5_error": "top-k err %",
    "top5_k": "k", "train_seconds": "train s", "train_images_per_second": "train img/s",
    "predict_ms_per_image": "ms/img (batch 1)", "predict_images_per_second": "img/s (batch)",
    "status": "status",
}


def add_parsers(commands: argparse._SubParsersAction) -> None:
    compare = commands.add_parser(
        "compare", help="fine-tune several architectures alike and compare their error rates",
        description="Fine-tune each architecture with the same split, seed, schedule, image size and "
        "augmentation; write results.json/.csv, two plots and report.md. --config takes a comparison "
        "file (archs: plus run sections, see configs/compare-classic.yaml). Exits 1 if any architecture failed.",
    )
    compare.add_argument("--archs", help="comma-separated registry names, e.g. alexnet,vgg16,googlenet,resnet18")
    compare.add_argument("--data", help="image folder (one sub-folder per class) or a built-in dataset: digits")
    compare.add_argument("--out", help="comparison folder (default: runs/compare-<timestamp>); "
                                       "run again with the same folder to continue it")
    add_training_flags(compare)
    compare.set_defaults(run=run_compare)

    report = commands.add_parser("report", help="comparison tables and plots from finished fine-tuning runs")
    report.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR",
                        help="finished run folders (zoo finetune's, or a comparison's runs/*)")
    report.add_argument("--out", type=Path, help="report folder (default: runs/report-<timestamp>)")
    report.set_defaults(run=run_report)


def _stamped(prefix: str) -> Path:
    return Path("runs") / f"{prefix}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def _finish(rows: Sequence[dict[str, Any]], out: Path, configs: Sequence[dict[str, Any]], label: str) -> None:
    from finetune.report import title_for, write_outputs

    shown = [{**row, "params_m": row["params"] / 1e6 if row["params"] is not None else None} for row in rows]
    write_outputs(rows, out, configs=configs, table=markdown_table(shown, {**COLUMNS, "reason": "reason"}))
    print_table(shown, COLUMNS, title=f"{title_for(configs)} (errors in %)")
    for row in rows:
        if row["status"] == "failed":
            print(f"{row['name']} failed: {row['reason']}")
    print(f"{label}: {out} (report.md, results.json, results.csv, depth_vs_error.png, error_vs_cost.png)")


def run_compare(args: argparse.Namespace) -> int:
    from finetune.compare import SETTINGS_FILE, compare, load_comparison
    from finetune.config import RunConfig, merge, to_dict

    overrides = overrides_from_flags(args)
    saved = Path(args.out) / SETTINGS_FILE if args.out else None
    # Continuing needs only --out: the folder's own settings are the base, as --config would be.
    source = args.config or (saved if saved is not None and saved.is_file() else None)
    archs, config = load_comparison(source) if source else ([], RunConfig())
    config = merge(config, overrides)
    if args.archs:
        archs = [name.strip() for name in args.archs.split(",") if name.strip()]
    out = Path(config.out) if config.out else _stamped("compare")
    rows = compare(archs, config, out)
    _finish(rows, out, [to_dict(config)], "comparison folder")
    return 1 if any(row["status"] == "failed" for row in rows) else 0


def run_report(args: argparse.Namespace) -> int:
    from finetune.report import read_summary, rows_from_runs

    rows = rows_from_runs(args.run_dirs)
    configs = [read_summary(run_dir)["config"] for run_dir in args.run_dirs]
    _finish(rows, args.out or _stamped("report"), configs, "report folder")
    return 0
