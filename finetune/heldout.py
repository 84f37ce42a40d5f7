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

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from finetune.calibration import calibration_error, fit_temperature, negative_log_likelihood
from finetune.data.scan import Sample
from finetune.stats import chance_error, learned, top_k, wilson_interval

PREDICTIONS_FILE = "test_predictions.csv"
PREDICTION_COLUMNS = ("path", "label", "predicted", "probability")


def error_rates(logits: Tensor, labels: Tensor) -> dict[str, Any]:
    """Top-1 error with its 95% Wilson interval, top-k error (k from ``top_k``), loss; errors in percent."""
    count = len(labels)
    errors = int((logits.argmax(dim=1) != labels).sum())
    k = top_k(logits.shape[1])
    topk_misses = None if k is None else int((logits.topk(k, dim=1).indices != labels[:, None]).all(dim=1).sum())
    low, high = wilson_interval(errors, count)
    return {
        "num_images": count,
        "top1_error": round(100.0 * errors / count, 4),
        "top1_error_ci95": [round(low, 4), round(high, 4)],
        "k": k,
        "topk_error": None if topk_misses is None else round(100.0 * topk_misses / count, 4),
        "loss": round(F.cross_entropy(logits.float(), labels).item(), 6),
    }


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
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(PREDICTION_COLUMNS)
        for sample, index, probability in zip(samples, predicted.tolist(), confidence.tolist()):
            writer.writerow((sample.path.absolute(), classes[sample.label], classes[index], round(probability, 6)))


def read_predictions(path: Path) -> dict[str, bool]:
    """Whether each image of a ``test_predictions.csv`` was classified right, by path."""
    with path.open(newline="", encoding="utf-8") as file:
        return {row["path"]: row["label"] == row["predicted"] for row in csv.DictReader(file)}


@dataclass(frozen=True)
class Calibration:
    """The fitted temperature and the validation ECE (percent) and NLL before and after it; None when the
    logits are not finite (a diverged run keeps temperature 1)."""

    temperature: float
    ece_before: float | None
    ece_after: float | None
    nll_before: float | None
    nll_after: float | None


def calibrate(logits: Tensor, labels: Tensor) -> Calibration:
    """Fit the temperature on validation ``logits`` and measure what it changed."""
    if not torch.isfinite(logits).all():
        return Calibration(1.0, None, None, None, None)
    temperature = fit_temperature(logits, labels)
    return Calibration(
        temperature=round(temperature, 6),
        ece_before=round(calibration_error(logits.softmax(dim=1), labels), 4),
        ece_after=round(calibration_error((logits / temperature).softmax(dim=1), labels), 4),
        nll_before=round(negative_log_likelihood(logits, labels), 6),
        nll_after=round(negative_log_likelihood(logits, labels, temperature), 6),
    )


def judgement(interval: Sequence[float], labels: Sequence[int], split: str) -> dict[str, Any]:
    """Which split the headline error comes from, its chance level, and whether the model beat chance."""
    chance = round(chance_error(labels), 4)
    return {"reported_on": split, "chance_top1_error": chance, "learned": learned(tuple(interval), chance)}
