"""``zoo finetune`` and ``zoo lr-find``: flags made from the config's fields become overrides (defaults <
--config YAML < flags), then one call."""

from __future__ import annotations

import argparse
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any

from finetune.config import (
    ConfigError,
    FreezeMode,
    RunConfig,
    commented_yaml,
    config_fields,
    load_config,
    merge,
)
from zoo_cli.flags import add_flag, flag_of

if TYPE_CHECKING:
    from finetune.results.records import RunSummary, Split
    from finetune.training.learning_rate import LrFindResult

FIELDS = {key: (item, annotation) for key, item, annotation in config_fields()}
# Each command adds these itself, worded for what it does (zoo compare has --archs, and its --out is a comparison).
OWN_FLAGS = ("model.arch", "data.path", "out")


# flag destination -> dotted config key ("out" at the top level)
FLAG_FIELDS = {flag[2:].replace("-", "_"): key for key, (item, _) in FIELDS.items() if (flag := flag_of(item))}


def add_config_flag(parser: argparse._ActionsContainer, key: str, help: str | None = None) -> None:
    """The flag of config field ``key`` (``help`` rewords its help); not given, it leaves the file or default."""
    item, annotation = FIELDS[key]
    if key == "optim.freeze":  # MODE [N]: until-epoch N also sets optim.unfreeze_epoch (_freeze checks it)
        add_flag(parser, item, annotation, help, nargs="+", choices=None)
    else:
        add_flag(parser, item, annotation, help, default=None)


def add_training_flags(parser: argparse.ArgumentParser) -> None:
    """--config and the flag of every config field but OWN_FLAGS, by section (zoo finetune, lr-find, compare)."""
    parser.add_argument("--config", type=Path, help="YAML run config (see configs/); flags override it")
    groups: dict[str, argparse._ArgumentGroup] = {}
    for key, (item, _) in FIELDS.items():
        section = key.partition(".")[0]
        if key not in OWN_FLAGS and flag_of(item):
            if section not in groups:
                groups[section] = parser.add_argument_group(f"{section} settings")
            add_config_flag(groups[section], key)


def add_parsers(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("finetune", help="fine-tune an architecture on a folder of images")
    for key in OWN_FLAGS:
        add_config_flag(parser, key)
    parser.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue an interrupted run from its last.ckpt")
    parser.add_argument("--print-config", action="store_true",
                        help="print the settings (defaults < --config < flags) as YAML with each one's help, and "
                             "train nothing: configs/default.yaml is this output without flags")
    add_training_flags(parser)
    parser.set_defaults(run=run_finetune)

    finder = commands.add_parser("lr-find", help="suggest a learning rate: a range test on the training split")
    add_config_flag(finder, "model.arch")
    add_config_flag(finder, "data.path")
    add_config_flag(finder, "out", help="folder for lr_find.png and lr_find.json (default: print only)")
    add_training_flags(finder)
    finder.set_defaults(run=run_lr_find)


def _freeze(words: list[str]) -> dict[str, Any]:
    """optim's freeze, and unfreeze_epoch, from --freeze MODE [N]."""
    mode, *rest = words
    if mode not in typing.get_args(FreezeMode) or (mode == "until-epoch") != (len(rest) == 1) or len(rest) > 1:
        raise ConfigError("--freeze takes auto, none, backbone, or until-epoch N (e.g. --freeze until-epoch 2)")
    if rest and not rest[0].isdigit():
        raise ConfigError(f"--freeze until-epoch needs a whole epoch number, got '{rest[0]}'")
    return {"freeze": mode, **({"unfreeze_epoch": int(rest[0])} if rest else {})}


def overrides_from_flags(args: argparse.Namespace) -> dict[str, Any]:
    """Nested config overrides from the flags the user actually gave."""
    overrides: dict[str, Any] = {}
    for dest, key in FLAG_FIELDS.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        section, _, name = key.rpartition(".")
        target = overrides.setdefault(section, {}) if section else overrides
        target.update(_freeze(value) if key == "optim.freeze" else {name: value})
    return overrides


def _error(summary: RunSummary, split: Split) -> str:
    low, high = summary.interval(split) or (None, None)
    return f"{summary.error(split):.2f} ({low:.2f}-{high:.2f}), n = {summary.num_images(split)}"


def result_rows(summary: RunSummary) -> list[dict[str, Any]]:
    """The final table of ``zoo finetune``: the held-out error first, each with its interval and n."""
    rows = [{"key": key, "value": getattr(summary, key)}
            for key in ("arch", "weights", "num_classes", "num_train", "num_val", "num_test", "num_skipped", "epochs",
                        "best_epoch", "precision")]
    k = summary.k
    if summary.num_test:
        rows.append({"key": "test top-1 error (once, best checkpoint)", "value": _error(summary, "test")})
        if k:
            rows.append({"key": f"test top-{k} error", "value": summary.test_topk_error})
    rows.append({"key": "val top-1 error (chose the checkpoint: optimistic)", "value": _error(summary, "val")})
    if k:
        rows.append({"key": f"val top-{k} error", "value": summary.val_topk_error})
    ece = (f"{summary.val_ece_before:.2f} -> {summary.val_ece_after:.2f} (a perfectly calibrated model "
           f"scores {summary.val_ece_noise:.2f} on {summary.num_val} images)"
           if summary.val_ece_before is not None and summary.val_ece_after is not None
           and summary.val_ece_noise is not None else "not finite (the run diverged)")
    rows += [
        {"key": f"chance top-1 error ({summary.reported_on}: most frequent class)", "value": summary.chance_top1_error},
        {"key": "learned (interval below chance)", "value": summary.learned},
        {"key": "softmax temperature (fit on val)", "value": f"{summary.temperature:.3f}"},
        {"key": "val ECE before -> after (%)", "value": ece},
        {"key": "train_seconds", "value": summary.train_seconds},
        {"key": "train_images_per_second", "value": summary.train_images_per_second},
    ]
    return rows


def run_finetune(args: argparse.Namespace) -> int:
    overrides = overrides_from_flags(args)
    if args.print_config:
        print(commented_yaml(merge(load_config(args.config) if args.config else RunConfig(), overrides)), end="")
        return 0
    from finetune.runtime.progress import process_started
    from finetune.training.run import train
    from finetune.training.run_folder import resume_config
    from zoo_cli.output import print_table

    if args.resume is not None:
        if args.config is not None:
            raise ConfigError(f"--resume continues {args.resume} with its own config.yaml, and --config would be "
                              "ignored: leave it out (flags such as --epochs still apply)")
        config = resume_config(args.resume, overrides)
    else:
        config = merge(load_config(args.config) if args.config else RunConfig(), overrides)
    try:
        result = train(config, resume=args.resume, started=process_started())
    except Exception as error:
        from finetune.runtime.processes import orphaned

        if not orphaned():
            raise
        # Rank 0 was killed: this process's next collective fails (a gloo traceback); one line says why instead.
        raise ConfigError(f"the first process of this distributed run ended, so this one stops too "
                          f"({type(error).__name__}); continue the run with zoo finetune --resume RUN") from error
    if result.summary is None:  # a DDP worker process: rank 0 reports
        return 0
    print_table(result_rows(result.summary), {"key": "metric", "value": "value"},
                title="fine-tuning result (errors in %, 95% Wilson intervals)")
    print(f"run folder: {result.run_dir}")
    return 0


def lr_find_lines(arch: str, result: LrFindResult, folder: Path | None) -> list[str]:
    """What ``zoo lr-find`` prints: the suggestion, the steps it came from, and how it compares with the recipe."""
    from finetune.training.lr_finder import STEPS

    finding = result.finding
    suggestion = finding.suggestion
    stopped = (f" (of {STEPS}: Lightning stopped the test when the loss diverged)" if finding.steps < STEPS else "")
    written = f"; plot and curve in {folder}" if folder else ""
    lines = [f"suggested learning rate for {arch}: {suggestion:.2e}, from a {finding.steps}-step range test on the "
             f"training split{stopped}{written}"]
    if result.recipe_lr is not None:
        ratio = result.recipe_lr / suggestion
        lines.append(
            f"zoo's recipe trains this run at {result.recipe_lr:.0e} ({ratio:.1f}× the suggestion). The suggestion is "
            "where the loss fell fastest during a short test whose rate rose every step: a cautious point, often "
            "several times below the highest rate that trains well, while the recipe's rate was checked on real "
            "data sets (python -m benchmarks.defaults). Keep the recipe (no --lr) unless a run with "
            f"--lr {suggestion:.2e} does better on validation")
    else:
        lines.append(f"use it with --lr {suggestion:.2e}, or let zoo finetune find it with --lr auto")
    return lines


def run_lr_find(args: argparse.Namespace) -> int:
    from finetune.training.learning_rate import find_learning_rate

    config = merge(load_config(args.config) if args.config else RunConfig(), overrides_from_flags(args))
    folder = Path(config.out) if config.out else None
    for line in lr_find_lines(config.model.arch, find_learning_rate(config, folder), folder):
        print(line)
    return 0
