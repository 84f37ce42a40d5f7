"""A run's setup, decided before its folder exists: the settings left to zoo, the network, data and precision."""

from __future__ import annotations

import dataclasses
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

import zoo
from finetune.config import ConfigError, RunConfig, merge
from finetune.data.datamodule import ImageDataModule
from finetune.data.features import FeatureDataModule, uses_feature_cache
from finetune.data.shards import ShardSplit
from finetune.data.split import Split, class_counts
from finetune.runtime.console import say
from finetune.runtime.hardware import Choice, choose_loader, choose_memory_format, choose_precision, choose_threads
from finetune.runtime.processes import processes_per_node
from finetune.runtime.progress import PhaseTimes
from finetune.training import recipe
from finetune.training.callbacks import StepLines
from finetune.training.loggers import check_logger
from finetune.training.lr_finder import STEPS as LR_STEPS
from finetune.training.lr_finder import LrFinding, find_lr
from finetune.training.module import Classifier, FeatureProbe
from zoo.bundle import ModelMetadata
from zoo.spec import ArchSpec, Preprocessing
from zoo.weights.loading import weights_preprocessing


def _class_weights(split: Split) -> list[float]:
    """Inverse-frequency loss weights, 1.0 on average over classes."""
    counts = class_counts(split.train, split.classes)
    total, num_classes = sum(counts.values()), len(counts)
    return [total / (num_classes * max(1, count)) for count in counts.values()]


def preprocessing_of(config: RunConfig, spec: ArchSpec) -> Preprocessing:
    """The run's preprocessing: that of the weights it starts from (a tag or ``default``), else the entry's own
    (``--weights none`` or a file); ``--image-size`` sets the crop, the resize keeping the weights' ratio."""
    weights = None if config.model.weights == "none" else config.model.weights
    preprocessing = weights_preprocessing(spec, weights)
    size = config.data.image_size or preprocessing.crop
    problem = spec.input_size_problem(size)
    if problem:
        raise ConfigError(problem)
    return preprocessing.at(size)


def _weights(config: RunConfig, spec: ArchSpec) -> str | None:
    if config.model.weights == "none":
        return None
    if config.model.weights == "default" and spec.weights is None:
        say(f"{spec.name} has no pretrained weights: training from scratch")
        return None
    return config.model.weights


def build_classifier(config: RunConfig, spec: ArchSpec, split: Split,
                     preprocessing: Preprocessing) -> tuple[Classifier, str]:
    """The network from the registry wrapped in the LightningModule; returns it and the weights origin."""
    weights = _weights(config, spec)
    network = zoo.create_model(spec.name, len(split.classes), weights=weights, dropout=config.model.dropout)
    memory_format = choose_memory_format(config.model.memory_format, network)
    say(f"memory format: {memory_format.value} ({memory_format.reason})")
    torch_format = torch.channels_last if memory_format.value == "channels_last" else torch.contiguous_format
    network = network.to(memory_format=torch_format)
    origin = spec.weights.default_tag if weights == "default" and spec.weights else weights
    metadata = ModelMetadata(
        arch=spec.name,
        classes=split.classes,
        num_classes=len(split.classes),
        preprocessing=preprocessing,
        dropout=config.model.dropout,
        weights=origin or "none",
        flips_change_class=config.data.flips_change_class,
    )
    # A frozen backbone trains on cached features: the module then runs only the head.
    probe = uses_feature_cache(config, spec)
    if config.optim.freeze == "backbone" and config.data.cache != "none" and not probe:
        say(f"{spec.name} combines {len(spec.heads)} classifiers ({', '.join(spec.heads)}), which read different "
            "features: the frozen backbone runs on every batch instead of on cached features")
    module = (FeatureProbe if probe else Classifier)(
        network,
        heads=spec.heads,
        num_classes=len(split.classes),
        optim=config.optim,
        class_weights=_class_weights(split) if config.data.class_weights else None,
        metadata=metadata,
        memory_format=torch_format,
    )
    return module, origin or "none"


def choose_settings(config: RunConfig, split: Split, unused: tuple[str, ...] = ()) -> RunConfig:
    """Decide what ``config`` leaves to zoo (``finetune.training.recipe``, the threads), saying each choice and its
    reason (but those of the ``unused`` keys: settings the command at hand does not use, such as lr-find's epochs);
    torch runs on the chosen threads from here on."""
    spec = zoo.get_spec(config.model.arch)
    if config.model.weights == "default" and spec.weights is None:
        # config.yaml says what the run did: an entry without pretrained weights (small_cnn) starts from none.
        config = dataclasses.replace(config, model=dataclasses.replace(config.model, weights="none"))
        say(f"model.weights: none ({spec.name} has no pretrained weights: training from scratch)")
    pretrained = config.model.weights != "none"
    on_gpu = config.trainer.accelerator != "cpu" and torch.cuda.is_available()
    config, decisions = recipe.choose(config, spec, split, preprocessing_of(config, spec).crop, pretrained, on_gpu)
    if isinstance(split, ShardSplit) and config.data.cache != "none":
        if config.data.cache != "auto":
            raise ConfigError(f"--cache {config.data.cache} decodes every image into one cache, which streaming from "
                              "shards avoids: leave --cache out, or pass --cache none")
        config = merge(config, {"data": {"cache": "none"}})  # no decoded-image or feature cache: images stream
    for decision in (decision for decision in decisions if decision.key not in unused):
        value = f"{decision.value:g}" if isinstance(decision.value, float) else decision.value
        say(f"{decision.key}: {value} ({decision.reason})")
    if config.trainer.threads is None:
        # Chosen once and written into config.yaml: the thread count changes the arithmetic's order, so a resume
        # or a rerun of that file gets the same numbers whatever the load is then.
        workers = choose_loader(config.data.num_workers, len(split.train), on_gpu).num_workers
        threads = choose_threads(None, workers, processes_per_node(config))
        say(f"trainer.threads: {threads.value} ({threads.reason})")
        config = merge(config, {"trainer": {"threads": int(threads.value)}})
    assert config.trainer.threads is not None  # chosen above when it was not given
    torch.set_num_threads(config.trainer.threads)
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
    preprocessing = preprocessing_of(config, spec)
    image_size = preprocessing.crop
    pl.seed_everything(config.trainer.seed, workers=True, verbose=False)
    module, weights_origin = build_classifier(config, spec, split, preprocessing)
    if (config.data.mixup or config.data.cutmix) and isinstance(module, FeatureProbe):
        raise ConfigError("--mixup and --cutmix mix images, but a frozen backbone trains on cached features: "
                          "add --cache none to mix images, or drop --mixup / --cutmix")
    check_logger(config.trainer.logger)
    times = times or PhaseTimes()
    with times.phase("precision"):  # a timing probe on some CPUs (finetune.runtime.hardware)
        precision = choose_precision(config.trainer.precision, config.trainer.accelerator, module.network, image_size,
                                     spec.name)
    say(f"precision: {precision.value} ({precision.reason})")
    data = (FeatureDataModule(split, spec, image_size, config.data, module, times, preprocessing)
            if isinstance(module, FeatureProbe) else ImageDataModule(split, spec, image_size, config.data, times,
                                                                     preprocessing))
    say(f"cache: {data.cache.value} ({data.cache.reason})")
    if config.data.feature_views and not isinstance(module, FeatureProbe):
        say("data.feature_views only applies to a frozen backbone trained on cached features "
             "(--freeze backbone, --cache not none): ignored", warning=True)
    return Setup(spec, image_size, module, weights_origin, data, precision)


def trainer_settings(config: RunConfig, precision: str, root: Path) -> dict[str, Any]:
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
        trainer = pl.Trainer(**trainer_settings(config, setup.precision.value, Path(scratch)), devices=1,
                             max_epochs=LR_STEPS, max_steps=LR_STEPS, enable_checkpointing=False,
                             num_sanity_val_steps=0,
                             callbacks=[] if sys.stdout.isatty() else [StepLines("finding the learning rate")])
        return find_lr(setup.module, setup.data, trainer, folder)
