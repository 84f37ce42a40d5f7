"""``train(config)``: from a folder of images to a trained, measured classifier in a run folder."""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

import zoo
from finetune.callbacks import EarlyStop, EpochLog, EpochMetrics, ProgressBar, SaveOnInterrupt, Throughput
from finetune.config import ConfigError, RunConfig, load_config, merge, save_config
from finetune.data.builtin import resolve_data
from finetune.data.datamodule import ImageDataModule
from finetune.data.split import Split, class_counts, imbalance_ratio, load_split, save_split, split_folder
from finetune.data.transforms import resize_size
from finetune.freezing import BackboneFreeze
from finetune.heldout import measure_best
from finetune.hardware import Choice, choose_memory_format, choose_precision
from finetune.loggers import check_logger, make_logger
from finetune.lr_finder import STEPS as LR_STEPS
from finetune.lr_finder import LrFinding, find_lr
from finetune.module import Classifier
from finetune.plots import plot_learning_curves
from finetune import recipe
from finetune.progress import PhaseTimes
from finetune.probe import FeatureDataModule, FeatureProbe, uses_feature_cache
from zoo.spec import ArchSpec

IMBALANCE_WARNING_RATIO = 3.0
RUN_DIR_ENV = "ZOO_RUN_DIR"  # hands the run folder to the processes a DDP launch starts


@dataclass(frozen=True)
class RunResult:
    """Where the run lives and what it measured (the content of ``summary.json``)."""

    run_dir: Path
    summary: dict[str, Any]


def _is_launched_worker() -> bool:
    """True in the extra processes Lightning's DDP launcher starts (they re-run the same command)."""
    return os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("NODE_RANK", "0") != "0"


def _say(message: str, *, warning: bool = False) -> None:
    if not _is_launched_worker():
        print(f"zoo: {'warning: ' if warning else ''}{message}", file=sys.stderr if warning else sys.stdout, flush=True)


def new_run_dir(config: RunConfig) -> Path:
    """The run folder for a new run; refuses one that already holds files (nothing is overwritten)."""
    if _is_launched_worker() and RUN_DIR_ENV in os.environ:
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
    return merge(load_config(run_dir / "config.yaml"), overrides)


def make_split(config: RunConfig) -> Split:
    """Scan and split ``config.data.path`` (nothing is written yet) and report what was found."""
    split = split_folder(resolve_data(config.data.path), val_fraction=config.data.val_fraction,
                         test_fraction=config.data.test_fraction, seed=config.trainer.seed)
    counts = class_counts(split.train, split.classes)
    _say(f"{len(split.classes)} classes, {len(split.train)} train / {len(split.val)} val / {len(split.test)} test "
         "images: " + ", ".join(f"{name} {count}" for name, count in counts.items()))
    if not split.test:
        _say("no test images (data.test_fraction 0 and no test/ folder): every error reported is on the validation "
             "images that chose the checkpoint, so it is optimistic", warning=True)
    ratio = imbalance_ratio(counts)
    if ratio >= IMBALANCE_WARNING_RATIO and not config.data.class_weights:
        _say(f"classes are imbalanced (largest/smallest = {ratio:.1f}): consider --class-weights", warning=True)
    return split


def _class_weights(split: Split) -> list[float]:
    """Inverse-frequency loss weights, 1.0 on average over classes."""
    counts = class_counts(split.train, split.classes)
    total, num_classes = sum(counts.values()), len(counts)
    return [total / (num_classes * max(1, count)) for count in counts.values()]


def _devices(devices: str) -> int | str | list[int]:
    if devices == "auto":
        return devices
    try:
        return [int(d) for d in devices.split(",") if d] if "," in devices else int(devices)
    except ValueError:
        raise ConfigError(f"trainer.devices must be auto, a count or a list like 0,1; got '{devices}'") from None


def _image_size(config: RunConfig, spec: ArchSpec) -> int:
    size = config.data.image_size or spec.input_size
    if size < spec.min_input_size:
        raise ConfigError(f"{spec.name} needs images of at least {spec.min_input_size} px: raise --image-size (got {size})")
    return size


def _weights(config: RunConfig, spec: ArchSpec) -> str | None:
    if config.model.weights == "none":
        return None
    if config.model.weights == "default" and spec.weights is None:
        _say(f"{spec.name} has no pretrained weights: training from scratch")
        return None
    return config.model.weights


def build_classifier(config: RunConfig, spec: ArchSpec, split: Split, image_size: int) -> tuple[Classifier, str]:
    """The network from the registry wrapped in the LightningModule; returns it and the weights origin."""
    weights = _weights(config, spec)
    network = zoo.create_model(spec.name, len(split.classes), weights=weights, dropout=config.model.dropout)
    memory_format = choose_memory_format(config.model.memory_format, network)
    _say(f"memory format: {memory_format.value} ({memory_format.reason})")
    torch_format = torch.channels_last if memory_format.value == "channels_last" else torch.contiguous_format
    network = network.to(memory_format=torch_format)
    origin = spec.weights.default_tag if weights == "default" and spec.weights else weights
    metadata = {
        "arch": spec.name,
        "classes": split.classes,
        "num_classes": len(split.classes),
        "image_size": image_size,
        "resize": resize_size(spec, image_size),
        "mean": list(spec.mean),
        "std": list(spec.std),
        "interpolation": spec.interpolation,
        "dropout": config.model.dropout,
        "weights": origin or "none",
    }
    # A frozen backbone trains on cached features: the module then runs only the head.
    module = (FeatureProbe if uses_feature_cache(config) else Classifier)(
        network,
        head=spec.head,
        num_classes=len(split.classes),
        optim=config.optim,
        class_weights=_class_weights(split) if config.data.class_weights else None,
        metadata=metadata,
        memory_format=torch_format,
    )
    return module, origin or "none"


# Lightning's start-up and shutdown lines, which open and close every log without telling the user anything
# zoo does not print itself (zoo prints the precision it chose and why).
LIGHTNING_CHATTER = ("💡", "GPU available:", "TPU available:", "Automatic Mixed Precision", "Loading `train_dataloader`",
                     "`Trainer.fit` stopped:", "HPU available:", "You are using a CUDA device",
                     # the learning-rate finder saving and restoring the network around its test
                     "Restoring states from the checkpoint", "Restored all states from the checkpoint",
                     "`weights_only` was not set, defaulting to `False`")


class _DropLightningChatter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(marker in message for marker in LIGHTNING_CHATTER)


def _quiet_lightning() -> None:
    """Drop Lightning's advertising and the warnings that zoo's own layout triggers on purpose."""
    # On Lightning's own handler, so the lines of every pytorch_lightning logger pass the filter.
    for handler in logging.getLogger("pytorch_lightning").handlers:
        if not any(isinstance(existing, _DropLightningChatter) for existing in handler.filters):
            handler.addFilter(_DropLightningChatter())
    warnings.filterwarnings("ignore", message=r".*Checkpoint directory .* exists and is not empty")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    warnings.filterwarnings("ignore", message=r".*does not have many workers")
    warnings.filterwarnings("ignore", message=r".*could not find the monitored key")  # a max_steps stop mid-epoch
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode")  # frozen BatchNorm, on purpose


def choose_settings(config: RunConfig, split: Split) -> RunConfig:
    """Decide what ``config`` leaves to zoo (``finetune.recipe``), saying each choice and its reason."""
    spec = zoo.get_spec(config.model.arch)
    weights = config.model.weights
    pretrained = weights != "none" and not (weights == "default" and spec.weights is None)
    on_gpu = config.trainer.accelerator != "cpu" and torch.cuda.is_available()
    config, decisions = recipe.choose(config, spec, split, _image_size(config, spec), pretrained, on_gpu)
    for decision in decisions:
        value = f"{decision.value:g}" if isinstance(decision.value, float) else decision.value
        _say(f"{decision.key}: {value} ({decision.reason})")
    return config


@dataclass(frozen=True)
class Setup:
    """What a run trains, on what, and how: everything decided before the run folder exists."""

    spec: ArchSpec
    image_size: int
    module: Classifier
    weights_origin: str
    data: ImageDataModule
    precision: Choice


def prepare(config: RunConfig, split: Split, times: PhaseTimes | None = None) -> Setup:
    """Build the network, the data module and the precision of a run (and say what was chosen and why)."""
    spec = zoo.get_spec(config.model.arch)
    image_size = _image_size(config, spec)
    pl.seed_everything(config.trainer.seed, workers=True, verbose=False)
    module, weights_origin = build_classifier(config, spec, split, image_size)
    if (config.data.mixup or config.data.cutmix) and isinstance(module, FeatureProbe):
        raise ConfigError("--mixup and --cutmix mix images, but a frozen backbone trains on cached features: "
                          "add --cache none to mix images, or drop --mixup / --cutmix")
    check_logger(config.trainer.logger)
    precision = choose_precision(config.trainer.precision, config.trainer.accelerator, module.network, image_size)
    _say(f"precision: {precision.value} ({precision.reason})")
    data = (FeatureDataModule(split, spec, image_size, config.data, module, times) if isinstance(module, FeatureProbe)
            else ImageDataModule(split, spec, image_size, config.data, times))
    _say(f"cache: {data.cache.value} ({data.cache.reason})")
    if config.data.feature_views and not isinstance(module, FeatureProbe):
        _say("data.feature_views only applies to a frozen backbone trained on cached features "
             "(--freeze backbone, --cache not none): ignored", warning=True)
    return Setup(spec, image_size, module, weights_origin, data, precision)


def _trainer_settings(config: RunConfig, precision: str, root: Path) -> dict[str, Any]:
    """The Trainer settings the learning-rate finder and the run share."""
    return {
        "default_root_dir": root,
        "precision": precision,
        "accelerator": config.trainer.accelerator,
        "logger": False,
        "enable_model_summary": False,
        "enable_progress_bar": sys.stdout.isatty(),
        "benchmark": True,  # cuDNN picks the fastest kernels for the fixed image size (no effect on CPU)
    }


def learning_rate_finding(config: RunConfig, setup: Setup, folder: Path | None) -> LrFinding:
    """The range test of ``setup``'s network on its training split, in one process (plot and curve to ``folder``)."""
    with tempfile.TemporaryDirectory(prefix="zoo-lr-find-") as scratch:  # the finder's restore checkpoint
        trainer = pl.Trainer(**_trainer_settings(config, setup.precision.value, Path(scratch)), devices=1,
                             max_epochs=LR_STEPS, max_steps=LR_STEPS, enable_checkpointing=False,
                             num_sanity_val_steps=0)
        return find_lr(setup.module, setup.data, trainer, folder)


def find_learning_rate(config: RunConfig, folder: Path | None = None) -> float:
    """``zoo lr-find``: the suggested learning rate for ``config`` (plot and curve written to ``folder``)."""
    _quiet_lightning()
    split = make_split(config)
    setup = prepare(choose_settings(config, split), split)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    return learning_rate_finding(config, setup, folder).suggestion


def _resolve_lr(config: RunConfig, setup: Setup, run_dir: Path) -> RunConfig:
    """``--lr auto``: the finder's suggestion, in the config and the module."""
    lr = learning_rate_finding(config, setup, run_dir).suggestion
    _say(f"learning rate: {lr:.2e} (range test on the training split: {run_dir / 'lr_find.png'})")
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
    _quiet_lightning()
    times = PhaseTimes()  # scanning, decoding, feature extraction, learning-rate finding, testing
    if _is_launched_worker():  # the launching process resolved every choice and wrote it down
        config = load_config(Path(os.environ[RUN_DIR_ENV]) / "config.yaml")
    if resume is not None or _is_launched_worker():
        split = load_split(resume or Path(os.environ[RUN_DIR_ENV]))
    elif split is None:
        scan_started = time.perf_counter()
        split = make_split(config)
        times.add("scan", time.perf_counter() - scan_started)
    config = choose_settings(config, split)
    setup = prepare(config, split, times)
    spec, image_size, module, data, precision = setup.spec, setup.image_size, setup.module, setup.data, setup.precision
    run_dir = resume if resume is not None else new_run_dir(config)
    if resume is None and not _is_launched_worker():
        save_split(split, run_dir)
        if split.skipped:
            _say(f"skipped {len(split.skipped)} unreadable files (listed with reasons in {run_dir / 'skipped.csv'})",
                 warning=True)
    if config.optim.lr == "auto":
        finder_started = time.perf_counter()
        config = _resolve_lr(config, setup, run_dir)
        times.add("lr_find", time.perf_counter() - finder_started)
    if resume is None and not _is_launched_worker():
        save_config(config, run_dir / "config.yaml")  # the resolved learning rate, not "auto"

    metrics = EpochMetrics(run_dir / "metrics.csv")
    throughput = Throughput()
    checkpoints = pl.callbacks.ModelCheckpoint(
        dirpath=run_dir, filename="best", monitor="val/top1_error", mode="min", save_last=True,
        auto_insert_metric_name=False, enable_version_counter=False,
    )
    # A terminal gets the live bar; a log file one line per epoch instead of every redraw.
    progress = ProgressBar() if sys.stdout.isatty() else EpochLog(metrics, throughput)
    callbacks: list[pl.Callback] = [checkpoints, metrics, throughput, SaveOnInterrupt(run_dir), progress, *watchers]
    unfreeze_epoch = config.optim.unfreeze_epoch if config.optim.freeze == "until-epoch" else 0
    if config.optim.freeze != "none":
        callbacks.append(BackboneFreeze(unfreeze_epoch or None))
    early_stop = EarlyStop(config.trainer.patience, unfreeze_epoch) if config.trainer.patience else None
    if early_stop is not None:
        callbacks.append(early_stop)
    trainer = pl.Trainer(
        **{**_trainer_settings(config, precision.value, run_dir), "logger": make_logger(config.trainer.logger, run_dir)},
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
    trainer.fit(module, datamodule=data, ckpt_path=run_dir / "last.ckpt" if resume is not None else None)
    _validate_final_step(trainer, module, data, metrics, checkpoints)
    if not trainer.is_global_zero:
        return RunResult(run_dir, {})
    final = _final_metrics(run_dir / "metrics.csv")
    if split.test:
        _say(f"measuring the best checkpoint (epoch {final['best_epoch']}) once on {len(split.test)} test images")
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
        _say(not_learned_message(summary), warning=True)
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
    if metrics.rows and metrics.rows[-1]["step"] == trainer.global_step:
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
