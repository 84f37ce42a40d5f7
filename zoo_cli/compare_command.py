"""``zoo compare`` (several architectures fine-tuned alike) and ``zoo report`` (the same outputs from runs)."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from zoo_cli.finetune_command import add_training_flags, overrides_from_flags
from zoo_cli.output import markdown_table, print_table

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
    compare.add_argument("--seeds", metavar="S1,S2,...",
                         help="run every row once per seed on the same split, e.g. 0,1,2: rows give mean and sd")
    compare.add_argument("--vary", action="append", default=[], metavar="KEY=V1,V2",
                         help="run every architecture under each value of a config field, e.g. "
                              "--vary model.dropout=0,0.5 (repeatable: every combination)")
    add_training_flags(compare)
    compare.set_defaults(run=run_compare)

    report = commands.add_parser("report", help="comparison tables and plots from finished fine-tuning runs")
    report.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR",
                        help="finished run folders (zoo finetune's, or a comparison's runs/*)")
    report.add_argument("--out", type=Path, help="report folder (default: runs/report-<timestamp>)")
    report.set_defaults(run=run_report)


def _stamped(prefix: str) -> Path:
    return Path("runs") / f"{prefix}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def _shown(row: dict[str, Any]) -> dict[str, Any]:
    """A results row with the columns a person reads: millions of parameters, errors with their intervals."""
    from finetune.results import headline_error, headline_interval, headline_std

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


def _finish(per_seed: Sequence[dict[str, Any]], out: Path, configs: Sequence[dict[str, Any]], label: str) -> None:
    from finetune.report import title_for, write_outputs
    from finetune.results import summarize

    rows = summarize(per_seed)
    shown = [_shown(row) for row in rows]
    write_outputs(rows, per_seed, out, configs=configs, table=markdown_table(shown, REPORT_COLUMNS))
    sizes = [row["image_size"] for row in per_seed if row.get("image_size")]
    print_table(shown, COLUMNS, title=f"{title_for(configs, sizes)} (errors in %; test unless marked val)")
    for row in rows:
        if row["status"] == "failed":
            print(f"{row['name']} failed: {row['reason']}")
        elif not row["learned"]:
            print(f"{row['name']}{' [' + row['setting'] + ']' if row['setting'] else ''} did not learn: its error does "
                  f"not lie below chance ({row['chance_top1_error']:.1f}%)")
    print(f"{label}: {out} (report.md, results.json, results.csv, results_per_seed.csv, depth_vs_error.png, "
          "error_vs_cost.png, curves.png)")


def run_compare(args: argparse.Namespace) -> int:
    from finetune.compare import SETTINGS_FILE, Plan, compare, load_comparison, parse_seeds, parse_vary
    from finetune.config import RunConfig, merge, to_dict
    from finetune.results import read_summary

    overrides = overrides_from_flags(args)
    saved = Path(args.out) / SETTINGS_FILE if args.out else None
    # Continuing needs only --out: the folder's own settings are the base, as --config would be.
    source = args.config or (saved if saved is not None and saved.is_file() else None)
    plan, config = load_comparison(source) if source else (Plan([]), RunConfig())
    config = merge(config, overrides)
    if args.archs:
        plan = dataclasses.replace(plan, archs=[name.strip() for name in args.archs.split(",") if name.strip()])
    if args.seeds:
        plan = dataclasses.replace(plan, seeds=parse_seeds(args.seeds))
    if args.vary:
        plan = dataclasses.replace(plan, vary=parse_vary(args.vary))
    out = Path(config.out) if config.out else _stamped("compare")
    rows = compare(plan, config, out)
    # The runs' own settings: the title and findings then name the seeds and varied settings they used.
    configs = [read_summary(Path(row["run_dir"]))["config"] for row in rows if row["status"] == "ok"]
    _finish(rows, out, configs or [to_dict(config)], "comparison folder")
    return 1 if any(row["status"] == "failed" for row in rows) else 0


def run_report(args: argparse.Namespace) -> int:
    from finetune.folders import check_out_folder
    from finetune.results import read_summary, rows_from_runs

    out = args.out or _stamped("report")
    check_out_folder(out)  # before the runs' speed is measured
    rows = rows_from_runs(args.run_dirs)
    configs = [read_summary(run_dir)["config"] for run_dir in args.run_dirs]
    _finish(rows, out, configs, "report folder")
    return 0
