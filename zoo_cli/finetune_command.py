"""``zoo finetune``: flags become config overrides (defaults < --config YAML < flags), then one call."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

# flag destination -> (config section, field); None section means a top-level field
FLAG_FIELDS: dict[str, tuple[str | None, str]] = {
    "data": ("data", "path"),
    "image_size": ("data", "image_size"),
    "batch_size": ("data", "batch_size"),
    "val_fraction": ("data", "val_fraction"),
    "test_fraction": ("data", "test_fraction"),
    "num_workers": ("data", "num_workers"),
    "augment": ("data", "augment"),
    "mixup": ("data", "mixup"),
    "cutmix": ("data", "cutmix"),
    "class_weights": ("data", "class_weights"),
    "cache": ("data", "cache"),
    "feature_views": ("data", "feature_views"),
    "arch": ("model", "arch"),
    "weights": ("model", "weights"),
    "dropout": ("model", "dropout"),
    "memory_format": ("model", "memory_format"),
    "optimizer": ("optim", "optimizer"),
    "lr": ("optim", "lr"),
    "weight_decay": ("optim", "weight_decay"),
    "label_smoothing": ("optim", "label_smoothing"),
    "backbone_lr_mult": ("optim", "backbone_lr_mult"),
    "epochs": ("trainer", "epochs"),
    "max_steps": ("trainer", "max_steps"),
    "patience": ("trainer", "patience"),
    "precision": ("trainer", "precision"),
    "accelerator": ("trainer", "accelerator"),
    "devices": ("trainer", "devices"),
    "num_nodes": ("trainer", "num_nodes"),
    "strategy": ("trainer", "strategy"),
    "seed": ("trainer", "seed"),
    "logger": ("trainer", "logger"),
    "out": (None, "out"),
}


def _learning_rate(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--lr takes a number or auto, got '{text}'") from None


def add_training_flags(parser: argparse.ArgumentParser) -> None:
    """The run settings shared by ``zoo finetune`` and ``zoo compare``."""
    parser.add_argument("--config", type=Path, help="YAML run config (see configs/); flags override it")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--max-steps", type=int, help="stop after this many optimiser steps (quick trials)")
    parser.add_argument("--patience", type=int, metavar="N",
                        help="stop after N epochs without a lower validation top-1 error (counted after unfreezing)")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=_learning_rate, help="a number, or auto: a range test on the training split picks it")
    parser.add_argument("--weight-decay", type=float)
    parser.add_argument("--optimizer", choices=("adamw", "sgd"))
    parser.add_argument("--image-size", type=int, help="input size in px (default: the architecture's)")
    parser.add_argument("--val-fraction", type=float,
                        help="share of images held out to choose the checkpoint when there is no val/ folder (0.15)")
    parser.add_argument("--test-fraction", type=float,
                        help="share held out from the start and measured once at the end when there is no test/ "
                             "folder (0.15; 0: none, every figure is then validation)")
    parser.add_argument("--num-workers", type=int, help="data-loader processes (default: from the machine)")
    parser.add_argument("--augment", choices=("standard", "light", "trivial", "randaugment", "autoaugment", "augmix", "none"),
                        help="standard: random resized crop + flip; light: milder crops; trivial, randaugment, "
                             "autoaugment, augmix: standard + that torchvision policy; none")
    parser.add_argument("--mixup", type=float, metavar="ALPHA", help="MixUp training batches with Beta(α, α) (0: off)")
    parser.add_argument("--cutmix", type=float, metavar="ALPHA", help="CutMix training batches (0: off)")
    parser.add_argument("--class-weights", action="store_true", default=None, help="inverse-frequency loss weights")
    parser.add_argument("--cache", choices=("auto", "memory", "disk", "none"),
                        help="decode-once image cache (and, with --freeze backbone, cached backbone features)")
    parser.add_argument("--feature-views", type=int, metavar="K",
                        help="with --freeze backbone: cache K augmented views per image (default 0: one plain view)")
    parser.add_argument("--weights", help="default | none | a weight tag | a .pth/.safetensors file")
    parser.add_argument("--freeze", nargs="+", metavar="MODE",
                        help="none | backbone (linear probe) | until-epoch N (freeze, then unfreeze at epoch N)")
    parser.add_argument("--backbone-lr-mult", type=float, help="backbone learning rate = lr × this")
    parser.add_argument("--dropout", type=float, help="dropout before the new linear head")
    parser.add_argument("--label-smoothing", type=float)
    parser.add_argument("--memory-format", choices=("auto", "channels_last", "contiguous"))
    parser.add_argument("--precision", help="auto | 32 | bf16-mixed | 16-mixed (auto: bf16-mixed where the hardware runs it natively)")
    parser.add_argument("--accelerator", help="auto | cpu | gpu (Lightning's)")
    parser.add_argument("--devices", help="auto, a count, or a list like 0,1")
    parser.add_argument("--num-nodes", type=int)
    parser.add_argument("--strategy", help="Lightning strategy: auto, ddp, ddp_spawn, fsdp …")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--logger", choices=("none", "csv", "tensorboard", "mlflow"),
                        help="also log to Lightning's CSV, TensorBoard or MLflow logger, in the run folder")


def add_parsers(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("finetune", help="fine-tune an architecture on a folder of images")
    parser.add_argument("--arch", help="registry name or timm/<name> (default: resnet18)")
    parser.add_argument("--data", help="image folder (one sub-folder per class) or a built-in dataset: digits")
    parser.add_argument("--out", help="run folder (default: runs/<arch>-<timestamp>)")
    parser.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue an interrupted run from its last.ckpt")
    add_training_flags(parser)
    parser.set_defaults(run=run_finetune)

    finder = commands.add_parser("lr-find", help="suggest a learning rate: a range test on the training split")
    finder.add_argument("--arch", help="registry name or timm/<name> (default: resnet18)")
    finder.add_argument("--data", help="image folder (one sub-folder per class) or a built-in dataset: digits")
    finder.add_argument("--out", help="folder for lr_find.png and lr_find.json (default: print only)")
    add_training_flags(finder)
    finder.set_defaults(run=run_lr_find)


def overrides_from_flags(args: argparse.Namespace) -> dict[str, Any]:
    """Nested config overrides from the flags the user actually gave."""
    from finetune.config import FREEZE_MODES, ConfigError

    overrides: dict[str, Any] = {}
    for flag, (section, name) in FLAG_FIELDS.items():
        value = getattr(args, flag, None)
        if value is None:
            continue
        if flag == "devices":
            value = str(value)
        target = overrides.setdefault(section, {}) if section else overrides
        target[name] = value
    if getattr(args, "freeze", None):
        mode, *rest = args.freeze
        if mode not in FREEZE_MODES or (mode == "until-epoch") != (len(rest) == 1) or len(rest) > 1:
            raise ConfigError("--freeze takes none, backbone, or until-epoch N (e.g. --freeze until-epoch 2)")
        optim = overrides.setdefault("optim", {})
        optim["freeze"] = mode
        if rest:
            if not rest[0].isdigit():
                raise ConfigError(f"--freeze until-epoch needs a whole epoch number, got '{rest[0]}'")
            optim["unfreeze_epoch"] = int(rest[0])
    return overrides


def _error(summary: dict[str, Any], split: str) -> str:
    low, high = summary[f"{split}_top1_error_ci95"]
    return f"{summary[f'{split}_top1_error']:.2f} ({low:.2f}-{high:.2f}), n = {summary[f'num_{split}']}"


def result_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The final table of ``zoo finetune``: the held-out error first, each with its interval and n."""
    rows = [{"key": key, "value": summary[key]} for key in ("arch", "weights", "num_classes", "num_train", "num_val",
                                                             "num_test", "num_skipped", "epochs", "best_epoch",
                                                             "precision")]
    k = summary["k"]
    if summary["num_test"]:
        rows.append({"key": "test top-1 error (once, best checkpoint)", "value": _error(summary, "test")})
        if k:
            rows.append({"key": f"test top-{k} error", "value": summary["test_topk_error"]})
    rows.append({"key": "val top-1 error (chose the checkpoint: optimistic)", "value": _error(summary, "val")})
    if k:
        rows.append({"key": f"val top-{k} error", "value": summary["val_topk_error"]})
    rows += [
        {"key": f"chance top-1 error ({summary['reported_on']}: most frequent class)",
         "value": summary["chance_top1_error"]},
        {"key": "learned (interval below chance)", "value": summary["learned"]},
        {"key": "softmax temperature (fit on val)", "value": f"{summary['temperature']:.3f}"},
        {"key": "val ECE before -> after (%)",
         "value": f"{summary['val_ece_before']:.2f} -> {summary['val_ece_after']:.2f}"
         if summary["val_ece_before"] is not None else "not finite (the run diverged)"},
        {"key": "train_seconds", "value": summary["train_seconds"]},
        {"key": "train_images_per_second", "value": summary["train_images_per_second"]},
    ]
    return rows


def run_finetune(args: argparse.Namespace) -> int:
    from finetune.config import RunConfig, load_config, merge
    from finetune.run import resume_config, train
    from zoo_cli.output import print_table

    overrides = overrides_from_flags(args)
    if args.resume is not None:
        config = resume_config(args.resume, overrides)
    else:
        config = merge(load_config(args.config) if args.config else RunConfig(), overrides)
    result = train(config, resume=args.resume)
    if not result.summary:  # a DDP worker process: rank 0 reports
        return 0
    print_table(result_rows(result.summary), {"key": "metric", "value": "value"},
                title="fine-tuning result (errors in %, 95% Wilson intervals)")
    print(f"run folder: {result.run_dir}")
    return 0


def run_lr_find(args: argparse.Namespace) -> int:
    from finetune.config import RunConfig, load_config, merge
    from finetune.run import find_learning_rate

    config = merge(load_config(args.config) if args.config else RunConfig(), overrides_from_flags(args))
    folder = Path(config.out) if config.out else None
    suggestion = find_learning_rate(config, folder)
    written = f" (plot and curve in {folder})" if folder else ""
    print(f"suggested learning rate for {config.model.arch}: {suggestion:.2e}{written}; "
          f"use it with --lr {suggestion:.2e}, or let zoo finetune find it with --lr auto")
    return 0
