"""``train(config)``: from a folder of images to a trained, measured classifier in a run folder."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from finetune.callbacks import (
    EarlyStop,
    EpochLog,
    EpochMetrics,
    FiniteLoss,
    ProgressBar,
    SaveOnInterrupt,
    Throughput,
)
from finetune.checkpoint import read_checkpoint
from finetune.config import ConfigError, RunConfig, load_config, merge, save_config
from finetune.console import is_launched_worker, quiet_lightning, say
from finetune.data.builtin import resolve_data
from finetune.data.datamodule import ImageDataModule
from finetune.data.split import (
    Split,
    class_counts,
    imbalance_ratio,
    load_split,
    save_split,
    split_folder,
)
from finetune.freezing import BackboneFreeze
from finetune.heldout import measure_best
from finetune.loggers import make_logger
from finetune.module import Classifier
from finetune.plots import plot_learning_curves
from finetune.progress import PhaseTimes
from finetune.setup import (
    Setup,
    choose_settings,
    learning_rate_finding,
    prepare,
    trainer_settings,
)

IMBALANCE_WARNING_RATIO = 3.0
RUN_DIR_ENV = "ZOO_RUN_DIR"  # hands the run folder to the processes a DDP launch starts


@dataclass(frozen=True)
class RunResult:
    """Where the run lives and what it measured (the content of ``summary.json``)."""

    run_dir: Path
    summary: dict[str, Any]


def new_run_dir(config: RunConfig) -> Path:
    """The run folder for a new run; refuses one that already holds files (nothing is overwritten)."""
    if is_launched_worker() and RUN_DIR_ENV in os.environ:
        return Path(os.environ[RUN_DIR_ENV])
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = Path(config.out) if config.out else Path("runs") / f"{config.model.arch.replace('/', '_')}-{stamp}"
    if run_dir.exists() and any(run_dir.iterdir()):
        raise ConfigError(
            f"run folder {run_dir} already holds a run: choose another --out, or continue it with --resume {run_dir}"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    os.environ[RUN_DIR_ENV] = str(run_dir)
    return run_dir


def resume_config(run_dir: Path, overrides: dict[str, Any]) -> RunConfig:
    """The saved configuration of ``run_dir`` with ``overrides`` (e.g. more epochs) applied."""
    if not (run_dir / "last.ckpt").is_file():
        raise ConfigError(f"cannot resume {run_dir}: it has no last.ckpt (start a new run with zoo finetune)")
    # Read as plain tensors first: a crafted or broken file is refused in one line before Lightning opens it.
    read_checkpoint(run_dir / "last.ckpt")
    return merge(load_config(run_dir / "config.yaml"), overrides)


def make_split(config: RunConfig) -> Split:
    """Scan and split ``config.data.path`` (nothing is written yet) and report what was found."""
    split = split_folder(resolve_data(config.data.path), val_fraction=config.data.val_fraction,
                         test_fraction=config.data.test_fraction, seed=config.trainer.seed)
    counts = class_counts(split.train, split.classes)
    say(f"{len(split.classes)} classes, {len(split.train)} train / {len(split.val)} val / {len(split.test)} test "
         "images: " + ", ".join(f"{name} {count}" for name, count in counts.items()))
    if not split.test:
        say("no test images (data.test_fraction 0 and no test/ folder): every error reported is on the validation "
             "images that chose the checkpoint, so it is optimistic", warning=True)
    ratio = imbalance_ratio(counts)
    if ratio >= IMBALANCE_WARNING_RATIO and not config.data.class_weights:
        say(f"classes are imbalanced (largest/smallest = {ratio:.1f}): consider --class-weights", warning=True)
    return split


def _devices(devices: str) -> int | str | list[int]:
    if devices == "auto":
        return devices
    try:
        return [int(d) for d in devices.split(",") if d] if "," in devices else int(devices)
    except ValueError:
        raise ConfigError(f"trainer.devices must be auto, a count or a list like 0,1; got '{devices}'") from None


def find_learning_rate(config: RunConfig, folder: Path | None = None) -> float:
    """``zoo lr-find``: the suggested learning rate for ``config`` (plot and curve written to ``folder``)."""
    quiet_lightning()
    split = make_split(config)
    setup = prepare(choose_settings(config, split), split)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    return learning_rate_finding(config, setup, folder).suggestion


def _resolve_lr(config: RunConfig, setup: Setup, run_dir: Path) -> RunConfig:
    """``--lr auto``: the finder's suggestion, in the config and the module."""
    lr = learning_rate_finding(config, setup, run_dir).suggestion
    say(f"learning rate: {lr:.2e} (range test on the training split: {run_dir / 'lr_find.png'})")
    config = merge(config, {"optim": {"lr": lr}})
    setup.module.optim = config.optim
    setup.module.hparams["optim"] = dataclasses.asdict(config.optim)
    return config


def train(config: RunConfig, *, resume: Path | None = None, split: Split | None = None,
          watchers: Sequence[pl.Callback] = ()) -> RunResult:
    """Fine-tune ``config.model.arch`` on ``config.data.path``; everything lands in the run folder.

    ``split`` reuses a split made elsewhere (``zoo compare`` shares one); by default one is made from
    the data folder, or read back from the run folder when resuming. The data and the weights are
    checked before the run folder is created, so a failed start leaves nothing behind. ``watchers`` are
    extra callbacks that observe the run (the benchmarks time its steps with one).
    """
    quiet_lightning()
    times = PhaseTimes()  # scanning, decoding, feature extraction, learning-rate finding, testing
    if is_launched_worker():  # the launching process resolved every choice and wrote it down
        config = load_config(Path(os.environ[RUN_DIR_ENV]) / "config.yaml")
    if resume is not None or is_launched_worker():
        split = load_split(resume or Path(os.environ[RUN_DIR_ENV]))
    elif split is None:
        scan_started = time.perf_counter()
        split = make_split(config)
        times.add("scan", time.perf_counter() - scan_started)
    config = choose_settings(config, split)
    setup = prepare(config, split, times)
    spec, image_size, module, data, precision = setup.spec, setup.image_size, setup.module, setup.data, setup.precision
    run_dir = resume if resume is not None else new_run_dir(config)
    if resume is None and not is_launched_worker():
        save_split(split, run_dir)
        if split.skipped:
            say(f"skipped {len(split.skipped)} unreadable files (listed with reasons in {run_dir / 'skipped.csv'})",
                 warning=True)
    if config.optim.lr == "auto":
        finder_started = time.perf_counter()
        config = _resolve_lr(config, setup, run_dir)
        times.add("lr_find", time.perf_counter() - finder_started)
    if resume is None and not is_launched_worker():
        save_config(config, run_dir / "config.yaml")  # the resolved learning rate, not "auto"

    metrics = EpochMetrics(run_dir / "metrics.csv")
    throughput = Throughput()
    checkpoints = pl.callbacks.ModelCheckpoint(
        dirpath=run_dir, filename="best", monitor="val/top1_error", mode="min", save_last=True,
        auto_insert_metric_name=False, enable_version_counter=False,
    )
    # A terminal gets the live bar; a log file one line per epoch instead of every redraw.
    progress = ProgressBar() if sys.stdout.isatty() else EpochLog(metrics, throughput)
    callbacks: list[pl.Callback] = [checkpoints, metrics, throughput, SaveOnInterrupt(run_dir), FiniteLoss(), progress,
                                    *watchers]
    unfreeze_epoch = config.optim.unfreeze_epoch if config.optim.freeze == "until-epoch" else 0
    if config.optim.freeze != "none":
        callbacks.append(BackboneFreeze(unfreeze_epoch or None))
    early_stop = EarlyStop(config.trainer.patience, unfreeze_epoch) if config.trainer.patience else None
    if early_stop is not None:
        callbacks.append(early_stop)
    trainer = pl.Trainer(
        **{**trainer_settings(config, precision.value, run_dir), "logger": make_logger(config.trainer.logger, run_dir)},
        max_epochs=config.trainer.epochs,
        max_steps=config.trainer.max_steps,
        devices=_devices(config.trainer.devices),
        num_nodes=config.trainer.num_nodes,
        strategy=config.trainer.strategy,
        callbacks=callbacks,
        num_sanity_val_steps=0,
        log_every_n_steps=10,
    )
    started = time.perf_counter()
    # weights_only pinned explicitly: TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD in the environment cannot unpin it.
    trainer.fit(module, datamodule=data, ckpt_path=run_dir / "last.ckpt" if resume is not None else None,
                weights_only=True)
    _validate_final_step(trainer, module, data, metrics, checkpoints)
    if not trainer.is_global_zero:
        return RunResult(run_dir, {})
    final = _final_metrics(run_dir / "metrics.csv")
    if split.test:
        say(f"measuring the best checkpoint (epoch {final['best_epoch']}) once on {len(split.test)} test images")
    test_started = time.perf_counter()
    measured = measure_best(trainer, module, data, split, run_dir, final)
    times.add("held_out", time.perf_counter() - test_started)
    summary = {
        "arch": spec.name,
        "weights": setup.weights_origin,
        "num_classes": len(split.classes),
        "classes": split.classes,
        "num_train": len(split.train),
        "num_val": len(split.val),
        "num_test": len(split.test),
        "num_skipped": len(split.skipped),
        "image_size": image_size,
        "epochs": trainer.current_epoch,
        "stopped_early_after_epoch": early_stop.stopped_at if early_stop is not None else None,
        "steps": trainer.global_step,
        "precision": precision.value,
        "memory_format": "channels_last" if module.memory_format == torch.channels_last else "contiguous",
        "selected_on": "val",
        **final,
        **measured,
        "train_seconds": round(throughput.seconds, 3),
        # Outside the training epochs: scanning, decoding, backbone features, lr finding, the held-out measurement.
        "phase_seconds": times.rounded(),
        "wall_seconds": round(time.perf_counter() - started, 3),
        "train_images_per_second": round(throughput.images_per_second, 2),
        "best_checkpoint": str(run_dir / "best.ckpt"),
        "last_checkpoint": str(run_dir / "last.ckpt"),
        "seed": config.trainer.seed,
        "config": dataclasses.asdict(config),
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8")
    if not summary["learned"]:
        say(not_learned_message(summary), warning=True)
    rows = _read_metrics(run_dir / "metrics.csv")
    if rows:
        plot_learning_curves(rows, run_dir / "learning_curves.png", f"{spec.name} on {Path(config.data.path).name}")
    return RunResult(run_dir, summary)


def not_learned_message(summary: dict[str, Any]) -> str:
    """One line saying a run stayed at chance, with its figures and what to try."""
    split = summary["reported_on"]
    low, high = summary[f"{split}_top1_error_ci95"]
    hints = ["a lower --lr", "more --epochs"]
    if summary["weights"] == "none":
        hints.append("pretrained --weights default where the architecture has them")
    return (f"{summary['arch']} did not learn: its {split} top-1 error {summary[f'{split}_top1_error']:.1f}% "
            f"(95% CI {low:.1f}-{high:.1f}) does not lie below chance, {summary['chance_top1_error']:.1f}% "
            f"(always the most frequent class); try {', '.join(hints)}")


def _validate_final_step(trainer: pl.Trainer, module: Classifier, data: ImageDataModule, metrics: EpochMetrics,
                         checkpoints: pl.callbacks.ModelCheckpoint) -> None:
    """A run cut short by ``max_steps`` mid-epoch is still measured and checkpointed at its last step."""
    if metrics.validated_step == trainer.global_step:  # the same answer on every process of a DDP run
        return
    trainer.validate(module, datamodule=data, verbose=False)
    error = trainer.callback_metrics.get("val/top1_error")
    best = checkpoints.best_model_score
    if best is None or (error is not None and float(error) < float(best)):
        trainer.save_checkpoint(Path(checkpoints.dirpath) / "best.ckpt")
    trainer.save_checkpoint(Path(checkpoints.dirpath) / "last.ckpt")


def _read_metrics(path: Path) -> list[dict[str, float | None]]:
    if not path.is_file():
        return []
    with path.open(encoding="utf-8") as file:
        return [{k: (float(v) if v not in ("", None) else None) for k, v in row.items()} for row in csv.DictReader(file)]


def _final_metrics(path: Path) -> dict[str, float | None]:
    """The validation figures of the best checkpoint's epoch (one row of metrics.csv) and of the last epoch."""
    rows = _read_metrics(path)
    # The first of equal errors, as ModelCheckpoint keeps the first checkpoint that reached it.
    best = min((r for r in rows if r.get("val/top1_error") is not None), key=lambda r: r["val/top1_error"], default={})
    last = rows[-1] if rows else {}
    return {
        "best_epoch": int(best["epoch"]) if best else None,
        "val_top1_error": best.get("val/top1_error"),
        "val_topk_error": best.get("val/topk_error"),
        "val_loss": best.get("val/loss"),
        "final_val_top1_error": last.get("val/top1_error"),
        "final_val_topk_error": last.get("val/topk_error"),
    }
