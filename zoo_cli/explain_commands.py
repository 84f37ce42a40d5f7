"""``zoo explain`` and ``zoo clean``: looking inside a model, and at the data it learns from."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from finetune.inspection.settings import CleanSettings, ExplainSettings
from zoo_cli.flags import add_settings_flags
from zoo_cli.model_commands import SOURCE_HELP
from zoo_cli.output import print_table, printable


def add_parsers(commands: argparse._SubParsersAction) -> None:
    explain = commands.add_parser("explain", help="what a model looks at: Grad-CAM heat maps, feature maps, filters")
    explain.add_argument("source", metavar="SOURCE",
                         help=f"a registry name (its pretrained weights and ImageNet's classes), or {SOURCE_HELP}")
    explain.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files or folders")
    explain.add_argument("--out", type=Path, metavar="DIR", required=True,
                         help="folder for the pictures and explain.json")
    add_settings_flags(explain, ExplainSettings)
    explain.set_defaults(run=run_explain)

    clean = commands.add_parser("clean", help="images probably filed under the wrong class, and near-duplicates "
                                              "(the data folder is never changed)")
    clean.add_argument("data", metavar="DATA", help="image folder, one sub-folder per class (train/val/test inside "
                                                    "it are read as the split), or digits")
    clean.add_argument("--out", type=Path, metavar="DIR", required=True,
                       help="folder for label_issues.csv/.png and near_duplicates.csv (not inside DATA)")
    add_settings_flags(clean, CleanSettings)
    clean.set_defaults(run=run_clean)


def run_explain(args: argparse.Namespace) -> int:
    from finetune.inspection.explain import FILTERS_FILE, REPORT_FILE, explain

    result = explain(args.source, args.images, args.out, method=args.method, class_name=args.class_name,
                     layer=args.layer, top_k=args.top_k)
    rows = [{"path": str(item.path), "class": f"{item.predictions[0][0]} {item.predictions[0][1]:.3f}",
             "target": f"{item.target} {item.target_probability:.3f}", "stage": item.layer}
            for item in result.explanations]
    print_table(rows, {"path": "image", "class": "top-1 (probability)", "target": f"{result.method} of",
                       "stage": "layer"})
    once = ", ".join([FILTERS_FILE] * result.filters + [REPORT_FILE])
    print(f"written to {result.out_dir}: per image STEM.gradcam.png, STEM.gradcam.npy, STEM.feature_maps.png; {once}")
    for path, reason in result.skipped:  # as zoo predict: the others explained, the exit status 1
        print(printable(f"zoo explain: warning: skipped {path}: {reason}"), file=sys.stderr)
    return 1 if result.skipped else 0


def run_clean(args: argparse.Namespace) -> int:
    from finetune.inspection.clean import clean

    result = clean(args.data, args.out, arch=args.arch, folds=args.folds, image_size=args.image_size,
                   batch_size=args.batch_size, similarity=args.similarity, shown=args.shown)
    rows = [{"path": str(issue.path), "class": f"{issue.given} → {issue.suggested}", "value": issue.quality}
            for issue in result.issues[:args.shown]]
    print_table(rows, {"path": "image", "class": "given → suggested", "value": "label quality"},
                title=f"{len(result.issues)} probable label issues among {result.num_images} images (the out-of-fold "
                      f"linear heads disagree with {result.out_of_fold_error:.1f}% of the labels)")
    crossing = sum(pair.split_a != pair.split_b for pair in result.duplicates)
    print(f"{len(result.duplicates)} near-duplicate pairs (cosine similarity ≥ {args.similarity:g}), {crossing} of "
          "them across the train/val/test split")
    if result.skipped:
        print(f"{result.skipped} unreadable files left out")
    print(f"written to {result.out_dir}: label_issues.csv, label_issues.png, near_duplicates.csv; "
          f"{args.data} is unchanged")
    return 0
