"""``evaluate``: a trained model on labelled images, written as metrics, a confusion matrix and a report.

Errors are in percent (as in ``summary.json``); precision, recall and F1 are fractions.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor
from torch.nn import functional as F
from torch.utils.data import ConcatDataset, DataLoader, Dataset
from torchmetrics.functional.classification import (
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
)

from finetune.data.images import ImageDataset
from finetune.data.scan import DataError, Sample, scan_folder
from finetune.data.shards import ShardSplit, is_shards, load_shards, shard_dataset
from finetune.data.split import PARTS, load_split
from finetune.names import EVALUATION_SPLITS
from finetune.results.calibration import ECE_BINS, calibration_error, calibration_noise, plot_reliability
from finetune.results.confusion import plot_confusion_matrix, write_confusion_csv
from finetune.results.heldout import collect_logits, error_rates
from finetune.results.image_grid import plot_image_grid
from finetune.results.settings import EvaluateSettings
from finetune.results.stats import chance_error, learned
from finetune.runtime.folders import check_out_folder
from finetune.runtime.hardware import choose_loader
from finetune.shipping.sources import Source, load_source
from zoo._io import write_atomic
from zoo.bundle import LoadedModel
from zoo.errors import ZooError

TOP_LOSS_COLUMNS = ("path", "label", "predicted", "probability", "loss")


@dataclass(frozen=True)
class LabelledImages:
    """The images an evaluation runs on, what they are, and what the user should know about them.

    From shards, ``samples`` name the original files and the images are read from the shards' ``parts``.
    """

    description: str
    split: str
    samples: list[Sample]
    warnings: list[str]
    shards: ShardSplit | None = None
    parts: tuple[str, ...] = ()

    def dataset(self, transform: Callable[[Image.Image], Any] | None) -> Dataset[tuple[Any, int]]:
        """The images in order, as ``(transform(image), label)``."""
        if self.shards is None:
            return ImageDataset(self.samples, transform)
        shards = self.shards
        return ConcatDataset([shard_dataset(shards, part, transform, shuffle=False, seed=0, alone=True)
                              for part in self.parts])


@dataclass(frozen=True)
class EvaluationResult:
    """Where the files went, the content of ``metrics.json``, and the warnings about the data."""

    out_dir: Path
    metrics: dict[str, Any]
    warnings: list[str]


CHOSE_SOMETHING = {
    "val": "these validation images chose the checkpoint and fitted the softmax temperature: their error is optimistic",
    "all": "these images include the training images: their error says nothing about new images",
}


def _from_run(run_dir: Path, split: str | None, classes: list[str]) -> LabelledImages:
    saved = load_split(run_dir)
    if saved.classes != classes:
        raise DataError(f"the split saved in {run_dir} has other classes than its checkpoint: evaluate with --data DIR")
    # The test split is the one that chose nothing; runs without one fall back to validation, and say so.
    split = split or ("test" if saved.test else "val")
    samples = saved.train + saved.val + saved.test if split == "all" else getattr(saved, split)
    if not samples:
        raise DataError(f"run {run_dir} has no {split} images (it held out none): choose --split val, or pass "
                        "--data DIR")
    warnings = [CHOSE_SOMETHING[split]] if split in CHOSE_SOMETHING else []
    return LabelledImages(f"{run_dir} ({split} split)", split, samples, warnings)


def _class_folders(root: Path) -> set[str]:
    return {entry.name for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith(".")}


def _from_folder(root: Path, split: str | None, classes: list[str]) -> LabelledImages:
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist; pass a folder with one sub-folder of images per class")
    # The same layout rule as training: train/ and val/ side by side mean the folder is already split.
    if (root / "train").is_dir() and (root / "val").is_dir():
        split = split or "val"
        parts = [root / part for part in PARTS if (root / part).is_dir()] if split == "all" else [root / split]
        if not parts[0].is_dir():
            raise DataError(f"{root} has no {split}/ folder: choose --split val or all")
    elif split in ("val", "test"):
        raise DataError(f"{root} has no train/ and val/ sub-folders, so no {split} split: evaluate it whole with "
                        "--split all")
    else:
        split, parts = "all", [root]
    folders = set().union(*(_class_folders(part) for part in parts))
    unknown = sorted(folders - set(classes))
    if unknown:
        raise DataError(
            f"class folders unknown to the model in {root}: {', '.join(unknown)} "
            f"(it knows {', '.join(classes)}); rename them to known classes or remove them"
        )
    warnings = []
    missing = [name for name in classes if name not in folders]
    if missing:
        warnings.append(f"no images of the known classes {', '.join(missing)} in {root}: their recall is not measured")
    scans = [scan_folder(part, classes) for part in parts]
    skipped = [file for scan in scans for file in scan.skipped]
    if skipped:
        warnings.append(f"skipped {len(skipped)} unreadable files (first: {skipped[0].path}: {skipped[0].reason})")
    return LabelledImages(f"{root} ({split})", split, [sample for scan in scans for sample in scan.samples], warnings)


def _from_shards(location: str, split: str | None, classes: list[str]) -> LabelledImages:
    shards = load_shards(location)
    if shards.classes != classes:
        raise DataError(f"the shards {location} hold other classes ({', '.join(shards.classes)}) than the model "
                        f"knows ({', '.join(classes)}); evaluate on shards of the same classes")
    split = split or ("test" if shards.test else "val")
    parts = tuple(part for part in PARTS if getattr(shards, part)) if split == "all" else (split,)
    samples = [sample for part in parts for sample in getattr(shards, part)]
    if not samples:
        raise DataError(f"the shards {location} hold no {split} images: choose --split val or all")
    warnings = [CHOSE_SOMETHING[split]] if split in CHOSE_SOMETHING else []
    return LabelledImages(f"{location} ({split})", split, samples, warnings, shards, parts)


def select_images(source: Source, data: str | Path | None, split: str | None) -> LabelledImages:
    """The images to evaluate on: ``data`` (a folder split by its sub-folders, or shards), else the run's own
    split."""
    if split is not None and split not in EVALUATION_SPLITS:
        raise ZooError(f"split must be one of {', '.join(EVALUATION_SPLITS)}, got '{split}'")
    if data is not None and is_shards(str(data)):
        return _from_shards(str(data), split, source.model.classes)
    if data is not None:
        return _from_folder(Path(data), split, source.model.classes)
    if source.run_dir is None:
        raise ZooError(f"{source.path} is not a run folder, so it has no data of its own: pass --data DIR")
    trained_on = _trained_on(source.run_dir)
    if trained_on is not None and is_shards(trained_on):  # its split is in the shards: no image file is needed
        return _from_shards(trained_on, split, source.model.classes)
    return _from_run(source.run_dir, split, source.model.classes)


def _trained_on(run_dir: Path) -> str | None:
    """The ``--data`` a run folder was trained on, as its config.yaml records it (None without one)."""
    from finetune.config import CONFIG_FILE, load_config

    return load_config(run_dir / CONFIG_FILE).data.path if (run_dir / CONFIG_FILE).is_file() else None


def model_logits(model: LoadedModel, samples: Sequence[Sample] | LabelledImages,
                 batch_size: int) -> tuple[Tensor, Tensor]:
    """The model's raw logits for ``samples`` (files, or the images of an evaluation) and their labels, in order."""
    images = samples if isinstance(samples, LabelledImages) else LabelledImages("", "", list(samples), [])
    settings = choose_loader(None, len(images.samples), gpu=model.device.type == "cuda")
    loader = DataLoader(
        images.dataset(model.transform), batch_size=batch_size, num_workers=settings.num_workers,
        pin_memory=settings.pin_memory,
    )
    return collect_logits(model.augmented, loader, model.device, nullcontext)


def compute_metrics(logits: Tensor, labels: Tensor, classes: Sequence[str],
                    temperature: float = 1.0) -> tuple[dict[str, Any], Tensor]:
    """Top-1 error with its 95% interval, top-k error (k from ``top_k``), loss, ECE of the softmax at
    ``temperature``, chance level, per-class figures, and the confusion matrix."""
    count = len(classes)
    per_class = zip(
        classes,
        multiclass_precision(logits, labels, count, average=None).tolist(),
        multiclass_recall(logits, labels, count, average=None).tolist(),
        multiclass_f1_score(logits, labels, count, average=None).tolist(),
        torch.bincount(labels, minlength=count).tolist(),
        strict=True,
    )
    rates = error_rates(logits, labels)
    chance = chance_error(labels.tolist())
    finite = bool(torch.isfinite(logits).all())  # a diverged model's logits: no probabilities to calibrate
    probabilities = (logits / temperature).softmax(dim=1)
    metrics = {
        "num_classes": count,
        **rates.to_dict(),
        "chance_top1_error": round(chance, 4),
        "learned": learned(rates.top1_error_ci95, chance),
        "temperature": temperature,
        "ece": round(calibration_error(probabilities, labels), 4) if finite else None,
        "ece_noise": round(calibration_noise(probabilities), 4) if finite else None,
        "per_class": [
            {"class": name, "precision": round(p, 4), "recall": round(r, 4), "f1": round(f, 4), "support": n}
            for name, p, r, f, n in per_class
        ],
    }
    return metrics, multiclass_confusion_matrix(logits, labels, count)


def _report(metrics: dict[str, Any], warnings: Sequence[str]) -> str:
    k = metrics["k"]
    low, high = metrics["top1_error_ci95"]
    lines = [
        f"# Evaluation of {metrics['source']}",
        "",
        f"- data: {metrics['data']}, {metrics['num_images']} images, {metrics['num_classes']} classes",
        f"- top-1 error: {metrics['top1_error']:.2f} % (95% Wilson interval {low:.2f}-{high:.2f} %, "
        f"n = {metrics['num_images']})",
        *([f"- top-{k} error: {metrics['topk_error']:.2f} %"] if k else []),
        f"- chance level: {metrics['chance_top1_error']:.2f} % (always the most frequent class of these images); "
        + ("the model beats it" if metrics["learned"] else "**the model does not beat it: it did not learn**"),
        f"- loss (cross-entropy): {metrics['loss']:.4f}",
        f"- calibration: ECE {metrics['ece']:.2f} % ({ECE_BINS} bins) at softmax temperature "
        f"{metrics['temperature']:.3g}; a perfectly calibrated model with these probabilities scores "
        f"{metrics['ece_noise']:.2f} % on as many images" if metrics["ece"] is not None
        else "- calibration: none, the model's outputs are not finite numbers",
        *(f"- warning: {warning}" for warning in warnings),
        "",
        "## Per class",
        "",
        "| class | precision | recall | F1 | support |",
        "|---|---|---|---|---|",
        *(f"| {row['class']} | {row['precision']:.3f} | {row['recall']:.3f} | {row['f1']:.3f} | {row['support']} |"
          for row in metrics["per_class"]),
        "",
        "## Confusion matrix",
        "",
        "Rows are true classes, columns predicted ones; counts in `confusion_matrix.csv`.",
        "",
        "![confusion matrix](confusion_matrix.png)",
        "",
        "## Calibration",
        "",
        "Accuracy against confidence: bars on the diagonal mean the probabilities can be taken at their word.",
        "",
        "![reliability diagram](calibration.png)",
        "",
        "## Top losses",
        "",
        "The images the model got most wrong (highest loss): often a wrong label, an odd image, or a class it "
        "confuses; every image in `top_losses.csv`.",
        "",
        "![top losses](top_losses.png)",
        "",
    ]
    return "\n".join(lines)


def _write_text(path: Path, text: str) -> None:
    write_atomic(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


def write_top_losses(images: LabelledImages, classes: Sequence[str], logits: Tensor, labels: Tensor,
                     temperature: float, out_dir: Path, shown: int, title: str) -> None:
    """``top_losses.csv`` (every image, highest loss first) and ``top_losses.png`` (the first ``shown``), as fastai's
    ``plot_top_losses``. The loss is the image's cross-entropy (their mean is metrics.json's loss); the probability
    is the calibrated one of the predicted class, as in ``test_predictions.csv``."""
    losses = F.cross_entropy(logits.float(), labels, reduction="none")
    confidence, predicted = (logits / temperature).softmax(dim=1).max(dim=1)
    order = losses.argsort(descending=True).tolist()
    samples = images.samples
    rows = [(samples[i].path, classes[int(labels[i])], classes[int(predicted[i])], round(float(confidence[i]), 6),
             round(float(losses[i]), 6)) for i in order]

    def write(temporary: Path) -> None:
        with temporary.open("w", newline="", encoding="utf-8") as file:
            writer = csv.writer(file)
            writer.writerow(TOP_LOSS_COLUMNS)
            writer.writerows(rows)

    write_atomic(out_dir / "top_losses.csv", write)
    # From shards, the pictures come from the chunks: the original files may be on another machine.
    pictures = images.dataset(None) if images.shards is not None else None
    plot_image_grid([(pictures[index][0] if pictures is not None else path,
                      f"true: {label}\npredicted: {guess} ({probability:.2f})\nloss {loss:.2f}")
                     for index, (path, label, guess, probability, loss) in zip(order, rows[:shown], strict=False)],
                    out_dir / "top_losses.png", f"top losses: {title}")


def _default_out(source: Source, data: str | Path | None, split: str) -> Path:
    if data is None and source.run_dir is not None:
        return source.run_dir / f"eval-{split}"
    return Path(f"eval-{Path(str(data).rstrip('/')).name if data is not None else source.path.name}-{split}")


def evaluate(
    source: str | Path, data: str | Path | None = None, split: str | None = None, out: Path | None = None,
    batch_size: int = EvaluateSettings.batch_size, top_losses: int = EvaluateSettings.top_losses,
    tta: str | None = EvaluateSettings.tta,
) -> EvaluationResult:
    """Evaluate a run folder, ``.ckpt`` or bundle; writes metrics.json, confusion_matrix.csv/.png,
    calibration.png, top_losses.csv/.png (the ``top_losses`` images of highest loss) and report.md. A run
    folder's own images default to its test split; ``tta`` (None: the model's own) averages over views."""
    if batch_size < 1:
        raise ZooError(f"--batch-size must be at least 1, got {batch_size}")
    if top_losses < 1:
        raise ZooError(f"--top-losses must be at least 1, got {top_losses}")
    if out is not None:
        check_out_folder(Path(out))  # before the images are scanned and the model run
    loaded = load_source(source, tta=tta)
    images = select_images(loaded, data, split)
    out_dir = Path(out) if out is not None else _default_out(loaded, data, images.split)
    check_out_folder(out_dir)
    model = loaded.model
    logits, labels = model_logits(model, images, batch_size)
    metrics, confusion = compute_metrics(logits, labels, model.classes, model.temperature)
    metrics = {"source": str(loaded.path), "data": images.description, "split": images.split, "tta": model.tta,
               **metrics}
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_text(out_dir / "metrics.json", json.dumps(metrics, indent=2, ensure_ascii=False) + "\n")
    write_confusion_csv(confusion, model.classes, out_dir / "confusion_matrix.csv")
    title = f"{model.metadata.arch} on {images.description}"
    plot_confusion_matrix(confusion, model.classes, out_dir / "confusion_matrix.png", title)
    if metrics["ece"] is not None:
        plot_reliability((logits / model.temperature).softmax(dim=1), labels, out_dir / "calibration.png",
                         f"{title}, softmax temperature {model.temperature:.3g}")
    write_top_losses(images, model.classes, logits, labels, model.temperature, out_dir, top_losses, title)
    _write_text(out_dir / "report.md", _report(metrics, images.warnings))
    return EvaluationResult(out_dir, metrics, images.warnings)
