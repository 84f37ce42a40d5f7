"""``zoo data``: look at an image folder before training on it. ``zoo data DIR`` is ``zoo data summary DIR``; other
actions on a folder register beside ``summary`` in ``add_parsers``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from zoo_cli.finetune_command import add_config_flag, overrides_from_flags
from zoo_cli.optimize_command import add_optimize_parser
from zoo_cli.output import print_table, printable

DEFAULT_ACTION = "summary"


def add_parsers(commands: argparse._SubParsersAction) -> None:
    data = commands.add_parser(
        "data", help="look at an image folder before training: class counts, image sizes, corrupt files, duplicates "
                     "and preview.png (zoo data DIR = zoo data summary DIR)")
    actions = data.add_subparsers(dest="action", required=True, metavar="ACTION")
    summary = actions.add_parser(
        DEFAULT_ACTION, help="class counts per split, image sizes, corrupt and duplicate files, and preview.png: "
                             "training images as the network will see them (nothing is trained or changed)")
    summary.add_argument("folder", metavar="DIR", help="image folder, one sub-folder per class (or train/ val/ "
                         "[test/]), or a built-in data set: digits")
    summary.add_argument("--out", type=Path, metavar="DIR", dest="summary_out",
                         help="folder for preview.png (default: ./data-NAME); never inside the data folder")
    for key in ("model.arch", "model.weights", "data.image_size", "data.augment", "data.val_fraction",
                "data.test_fraction", "trainer.seed"):
        add_config_flag(summary, key)
    summary.set_defaults(run=run_summary)
    add_optimize_parser(actions)


def with_default_action(parser: argparse.ArgumentParser, argv: Sequence[str]) -> list[str]:
    """``argv`` with ``summary`` put after ``data`` when no action follows it (``zoo data DIR``)."""
    argv = list(argv)
    if len(argv) >= 2 and argv[0] == "data" and argv[1] not in ("-h", "--help"):
        commands = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
        data = commands.choices["data"]
        actions = next(action for action in data._actions if isinstance(action, argparse._SubParsersAction))
        if argv[1] not in actions.choices:
            argv.insert(1, DEFAULT_ACTION)
    return argv


def run_summary(args: argparse.Namespace) -> int:
    from finetune.config import RunConfig, merge
    from finetune.data.summary import look_at_data

    overrides = overrides_from_flags(args)
    config = merge(RunConfig(), {**overrides, "data": {**overrides.get("data", {}), "path": args.folder}})
    out = args.summary_out or Path(f"data-{Path(args.folder).name}")
    summary = look_at_data(config, out)
    rows = [{"class": name, **{part: summary.counts[part][name] for part in summary.counts}}
            for name in summary.classes]
    print_table(rows, {"class": "class", "train": "train", "val": "val", "test": "test"}, title="images per class")
    print_table([{"key": size, "value": count} for size, count in summary.sizes.items()],
                {"key": "shorter side", "value": "images"}, title="image sizes")
    print(f"corrupt or unreadable: {len(summary.corrupt)}"
          + "".join(f"\n  {printable(str(path))}: {printable(reason)}" for path, reason in summary.corrupt[:10]))
    copies = sum(len(group) - 1 for group in summary.duplicates)
    print(f"byte-identical copies: {copies} in {len(summary.duplicates)} groups"
          + "".join(f"\n  {' = '.join(printable(str(path)) for path in group)}" for group in summary.duplicates[:10]))
    if summary.preview:
        print(f"preview: {summary.preview} (training images after augmentation {summary.augment}, as the network "
              "sees them)")
    return 0
