"""``zoo data optimize``: an image folder, split, written as LitData shards that ``zoo finetune --data`` streams."""

from __future__ import annotations

import argparse
from pathlib import Path

from finetune.data.settings import OptimizeSettings
from zoo_cli.flags import add_settings_flags


def add_optimize_parser(actions: argparse._SubParsersAction) -> None:
    """``optimize`` under the ``zoo data`` command group."""
    optimize = actions.add_parser(
        "optimize", help="split an image folder and write it as LitData chunks, for zoo finetune --data SHARDS "
                         "(a folder, or a copy in object storage such as s3://…)")
    optimize.add_argument("folder", type=Path, metavar="DIR",
                          help="image folder, one sub-folder per class (its train/val/test are kept)")
    optimize.add_argument("--out", type=Path, metavar="SHARDS", required=True, help="new folder for the shards")
    add_settings_flags(optimize, OptimizeSettings)
    optimize.set_defaults(run=run_optimize)


def run_optimize(args: argparse.Namespace) -> int:
    from finetune.data.shards import optimize_folder

    split = optimize_folder(args.folder, args.out, val_fraction=args.val_fraction, test_fraction=args.test_fraction,
                            seed=args.seed, workers=args.workers, decoded=args.decoded)
    counts = " / ".join(f"{len(getattr(split, part))} {part}" for part in ("train", "val", "test"))
    print(f"wrote {len(split.classes)} classes, {counts} images as LitData shards to {args.out}; train on them with: "
          f"zoo finetune --data {args.out} (or from a copy in object storage: --data s3://…)")
    return 0
