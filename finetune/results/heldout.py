"""The end of a run: the best checkpoint measured once on images that chose nothing.

The validation images chose the checkpoint (and now fit the softmax temperature), so their error is
optimistic; the test images, held out from the start, give the headline error with its 95% interval.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from finetune.data.datamodule import ImageDataModule
from finetune.data.images import ImageDataset
from finetune.data.scan import Sample
from finetune.data.split import Split
from finetune.results.calibration import (
    calibration_error,
    calibration_noise,
    fit_temperature,
    negative_log_likelihood,
)
from finetune.results.records import ErrorFigures
from finetune.results.stats import chance_error, learned, top_k, wilson_interval
from finetune.runtime.progress import PhaseTimes, tracked
from finetune.shipping.sources import read_checkpoint
from finetune.training.module import Classifier
from zoo._io import save_atomic, write_atomic
from zoo.errors import ZooError, describe_error
from zoo.tta import TtaMode
from zoo.tta_network import TtaNetwork

PREDICTIONS_FILE = "test_predictions.csv"
# Measuring keeps no activations for a backward pass, so batches this many times the training batch fit in the
# memory training took; larger batches ran small_cnn's forward pass 2.7× faster here (256 against 32 images).
MEASURE_BATCH_FACTOR, MEASURE_BATCH_MAX = 4, 256
PREDICTION_COLUMNS = ("path", "label", "predicted", "probability")


def error_rates(logits: Tensor, labels: Tensor) -> ErrorFigures:
    """Top-1 error with its 95% Wilson interval, top-k error (k from ``top_k``), loss; errors in percent."""
    count = len(labels)
    errors = int((logits.argmax(dim=1) != labels).sum())
    k = top_k(logits.shape[1])
    topk_misses = None if k is None else int((logits.topk(k, dim=1).indices != labels[:, None]).all(dim=1).sum())
    low, high = wilson_interval(errors, count)
    return ErrorFigures(
        num_images=count,
        top1_error=round(100.0 * errors / count, 4),
        top1_error_ci95=[round(low, 4), round(high, 4)],
        k=k,
        topk_error=None if topk_misses is None else round(100.0 * topk_misses / count, 4),
        loss=round(F.cross_entropy(logits.float(), labels).item(), 6),
    )


def collect_logits(module: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], device: torch.device,
                   context: Callable[[], AbstractContextManager]) -> tuple[Tensor, Tensor]:
    """``module``'s logits (float32, CPU) and the labels of every batch, in eval mode under ``context``."""
    was_training = module.training
    module.to(device).eval()
    logits, labels = [], []
    try:
        with torch.inference_mode(), context():
            for inputs, batch_labels in batches:
                logits.append(module(inputs.to(device)).float().cpu())
                labels.append(batch_labels)
    finally:
        module.train(was_training)
    return torch.cat(logits), torch.cat(labels)


def write_predictions(path: Path, samples: Sequence[Sample], classes: Sequence[str], probabilities: Tensor) -> None:
    """``path,label,predicted,probability`` per image: class names and the predicted class's probability."""
    confidence, predicted = probabilities.max(dim=1)

    def write(temporary: Path) -> None:
        with temporary.open("w", newline="", encoding="utf-8") as file:
            writer = csv.writer(file)
            writer.writerow(PREDICTION_COLUMNS)
            for sample, index, probability in zip(samples, predicted.tolist(), confidence.tolist(), strict=True):
                writer.writerow((sample.path.absolute(), classes[sample.label], classes[index], round(probability, 6)))

    write_atomic(path, write)


def read_predictions(path: Path) -> dict[str, bool]:
    """Whether each image of a ``test_predictions.csv`` was classified right, by path; a damaged file is one line."""
    fix = "zoo finetune writes it at the end of a run: train the run again, or leave it out"
    try:
        with path.open(newline="", encoding="utf-8") as file:
            reader = csv.DictReader(file)
            missing = [column for column in PREDICTION_COLUMNS if column not in (reader.fieldnames or [])]
            if missing:
                raise ZooError(f"{path} lacks the column {missing[0]}: {fix}")
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ZooError(f"cannot read {path}: {describe_error(error)}; {fix}") from error
    if any(None in (row["path"], row["label"], row["predicted"]) for row in rows):
        raise ZooError(f"{path} has a row with missing fields (cut off?): {fix}")
    return {row["path"]: row["label"] == row["predicted"] for row in rows}


@dataclass(frozen=True)
class Calibration:
    """The fitted temperature and the validation ECE (percent) and NLL before and after it, and the ECE a perfectly
    calibrated model with the calibrated probabilities would show on these images (``ece_noise``); None when the
    logits are not finite (a diverged run keeps temperature 1)."""

    temperature: float
    ece_before: float | None
    ece_after: float | None
    ece_noise: float | None
    nll_before: float | None
    nll_after: float | None


def calibrate(logits: Tensor, labels: Tensor) -> Calibration:
    """Fit the temperature on validation ``logits`` and measure what it changed."""
    if not torch.isfinite(logits).all():
        return Calibration(1.0, None, None, None, None, None)
    temperature = fit_temperature(logits, labels)
    calibrated = (logits / temperature).softmax(dim=1)
    return Calibration(
        temperature=round(temperature, 6),
        ece_before=round(calibration_error(logits.softmax(dim=1), labels), 4),
        ece_after=round(calibration_error(calibrated, labels), 4),
        ece_noise=round(calibration_noise(calibrated), 4),
        nll_before=round(negative_log_likelihood(logits, labels), 6),
        nll_after=round(negative_log_likelihood(logits, labels, temperature), 6),
    )


def judgement(interval: Sequence[float], labels: Sequence[int], split: str) -> dict[str, Any]:
    """Which split the headline error comes from, its chance level, and whether the model beat chance."""
    chance = round(chance_error(labels), 4)
    low, high = interval
    return {"reported_on": split, "chance_top1_error": chance, "learned": learned((low, high), chance)}


def held_out_logits(module: Classifier, data: ImageDataModule, split: Split, tta: TtaMode, device: torch.device,
                context: Callable[[], AbstractContextManager]) -> tuple[Tensor, Tensor]:
    """The test split's logits, averaged over the ``tta`` views: with TTA, images through the whole network (a
    linear probe's loader holds backbone features, which cannot be mirrored)."""
    if tta == "none":
        return collect_logits(module, _batches(data, "test", "test"), device, context)
    images = DataLoader(ImageDataset(split.test, data.transforms["test"]), batch_size=data.config.batch_size)
    return collect_logits(TtaNetwork(module.network, tta), images, device, context)


def measure_best(trainer: pl.Trainer, module: Classifier, data: ImageDataModule, split: Split, run_dir: Path,
                 final: dict[str, Any], tta: TtaMode = "none", times: PhaseTimes | None = None) -> dict[str, Any]:
    """Fit the temperature on validation, measure the test split once, and say whether the model learned.

    ``final`` holds the best epoch's validation figures (one row of ``metrics.csv``). Both run on the best
    checkpoint (the model one evaluates and exports), at the run's precision; ``tta`` augments the test
    measure only (the temperature is fitted on plain validation logits). The temperature and ``tta`` are stored
    in ``best.ckpt``; the test predictions go to ``test_predictions.csv``. ``times`` gets the seconds of the
    ``calibration`` (validation) and ``held_out`` (test) phases.
    """
    times = times or PhaseTimes()
    device, context = trainer.strategy.root_device, trainer.precision_plugin.forward_context
    with times.phase("calibration"):
        checkpoint_path = run_dir / "best.ckpt"
        checkpoint = read_checkpoint(checkpoint_path)
        module.load_state_dict(checkpoint["state_dict"])
        # Every validation image, on this process alone: val_dataloader would give it only its share under DDP.
        val_logits, val_labels = collect_logits(module, _batches(data, "val", "validation"), device, context)
        calibration = calibrate(val_logits, val_labels)
        checkpoint["zoo"]["temperature"] = calibration.temperature
        checkpoint["zoo"]["tta"] = tta
        save_atomic(checkpoint, checkpoint_path)
    # The validation figures are those of the best epoch's row in metrics.csv, which chose the checkpoint.
    val_interval = [round(bound, 4) for bound in wilson_interval(round(final["val_top1_error"] * len(split.val) / 100),
                                                                  len(split.val))]
    figures: dict[str, Any] = {
        "val_top1_error_ci95": val_interval, "k": module.top_k,
        "test_top1_error": None, "test_top1_error_ci95": None, "test_topk_error": None, "test_loss": None,
        **judgement(val_interval, [sample.label for sample in split.val], "val"),
    }
    if split.test:
        with times.phase("held_out"):
            test_logits, test_labels = held_out_logits(module, data, split, tta, device, context)
        test = error_rates(test_logits, test_labels)
        write_predictions(run_dir / PREDICTIONS_FILE, split.test, split.classes,
                          (test_logits / calibration.temperature).softmax(dim=1))
        figures.update({f"test_{key}": getattr(test, key) for key in ("top1_error", "top1_error_ci95", "topk_error")})
        # The training criterion (class weights, label smoothing), as for the validation loss it sits beside.
        weight = module.loss.weight.cpu() if module.loss.weight is not None else None
        figures["test_loss"] = round(F.cross_entropy(test_logits, test_labels, weight=weight,
                                                     label_smoothing=module.loss.label_smoothing).item(), 6)
        figures.update(judgement(test.top1_error_ci95, test_labels.tolist(), "test"))
    figures.update({"tta": tta, "temperature": calibration.temperature, "val_ece_before": calibration.ece_before,
                    "val_ece_after": calibration.ece_after, "val_ece_noise": calibration.ece_noise,
                    "val_nll_before": calibration.nll_before,
                    "val_nll_after": calibration.nll_after})
    return figures


def _batches(data: ImageDataModule, part: str, name: str) -> Iterable[tuple[Tensor, Tensor]]:
    """The batches of every image of ``part``, with progress. Images already decoded (the cache) only need cropping,
    so this process does it: starting worker processes would cost more than the work they take over."""
    batch_size = min(MEASURE_BATCH_MAX, MEASURE_BATCH_FACTOR * data.config.batch_size)
    loader = data.loader(part, in_process=data.cache.value != "none", batch_size=max(batch_size,
                                                                                      data.config.batch_size))
    return tracked(loader, len(loader), None, f"measuring the {name} images", None, "batches")
