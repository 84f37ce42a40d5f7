"""``zoo compare`` (several architectures fine-tuned alike) and ``zoo report`` (the same outputs from runs)."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from zoo_cli.finetune_command import add_training_flags, overrides_from_flags
from zoo_cli.output import print_table


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


def _finish(per_seed: Sequence[dict[str, Any]], out: Path, configs: Sequence[dict[str, Any]], label: str) -> None:
    from finetune.compare.report import COLUMNS, shown_row, title_for, write_outputs
    from finetune.compare.results import summarize

    rows = summarize(per_seed)
    write_outputs(rows, per_seed, out, configs=configs)
    shown = [shown_row(row) for row in rows]
    sizes = [row["image_size"] for row in per_seed if row.get("image_size")]
    weights = [row["weights"] for row in per_seed if row.get("weights")]
    print_table(shown, COLUMNS, title=f"{title_for(configs, sizes, weights)} (errors in %; test unless marked val)")
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
    from finetune.results.records import RunSummary

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
    configs = [to_dict(RunSummary.read(Path(row["run_dir"])).config) for row in rows if row["status"] == "ok"]
    _finish(rows, out, configs or [to_dict(config)], "comparison folder")
    return 1 if any(row["status"] == "failed" for row in rows) else 0


def run_report(args: argparse.Namespace) -> int:
    from finetune.compare.results import rows_from_runs
    from finetune.config import to_dict
    from finetune.results.records import RunSummary
    from finetune.runtime.folders import check_out_folder
    from zoo.errors import ZooError

    out = args.out or _stamped("report")
    check_out_folder(out)  # before the runs' speed is measured
    seen: dict[Path, Path] = {}
    for run_dir in args.run_dirs:
        if run_dir.resolve() in seen:  # it would count as two seeds of one setting
            raise ZooError(f"{run_dir} is given twice (as {seen[run_dir.resolve()]}): give each run once")
        seen[run_dir.resolve()] = run_dir
    configs = [to_dict(RunSummary.read(run_dir).config) for run_dir in args.run_dirs]
    data = list(dict.fromkeys(str(config["data"]["path"]) for config in configs))
    if len(data) > 1:  # errors on other images are not comparable
        raise ZooError(f"the runs were trained on different data ({', '.join(data[:3])}): report runs of one data "
                       "set together")
    rows = rows_from_runs(args.run_dirs)
    _finish(rows, out, configs, "report folder")
    return 0
