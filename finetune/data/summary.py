"""``zoo data DIR``: what an image folder holds before anything trains on it (fastai's ``show_batch`` and a summary).

Class counts per split, a histogram of image sizes, the files that cannot be decoded, byte-identical copies, and
``preview.png``: training images as the network will receive them after the run's augmentation. The folder is only
read: nothing in it is written, moved or changed.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image

from finetune.config import RunConfig
from finetune.data.scan import Sample
from finetune.data.split import Split, class_counts
from finetune.data.transforms import train_transform
from finetune.results.plots import save_figure
from zoo.images import load_rgb
from zoo.spec import Preprocessing

PREVIEW_FILE = "preview.png"
PREVIEW_IMAGES = 16
PREVIEW_COLUMNS = 4
# Shorter sides in pixels: the edges of the size histogram's bins (the last bin is open).
SIZE_EDGES = (0, 32, 64, 128, 224, 512, 1024, 2048)


@dataclass(frozen=True)
class DataSummary:
    """What ``zoo data`` found in a folder."""

    classes: list[str]
    counts: dict[str, dict[str, int]]  # split -> class -> images
    sizes: dict[str, int]  # "64–127 px" (shorter side) -> images
    corrupt: list[tuple[Path, str]]  # files skipped, with the reason
    duplicates: list[list[Path]]  # groups of byte-identical files, two or more each
    augment: str  # the augmentation preset the preview shows
    preview: Path | None


def size_bin(width: int, height: int) -> str:
    """The size histogram's bin of an image, by its shorter side."""
    side = min(width, height)
    for low, high in zip(SIZE_EDGES, SIZE_EDGES[1:], strict=False):
        if side < high:
            return f"{low}–{high - 1} px"
    return f"≥ {SIZE_EDGES[-1]} px"


def size_histogram(samples: Sequence[Sample]) -> dict[str, int]:
    """Images per bin of their shorter side, in the order of ``SIZE_EDGES``, empty bins left out."""
    found: Counter[str] = Counter()
    for sample in samples:
        with Image.open(sample.path) as image:  # the header only: no pixel is decoded
            found[size_bin(*image.size)] += 1
    order = [size_bin(low, low) for low in SIZE_EDGES]
    return {name: found[name] for name in order if found[name]}


def duplicate_groups(samples: Sequence[Sample]) -> list[list[Path]]:
    """Files with the same bytes (the same image saved twice, possibly under two classes or splits)."""
    by_digest: dict[str, list[Path]] = {}
    for sample in samples:
        digest = hashlib.sha256(sample.path.read_bytes()).hexdigest()
        by_digest.setdefault(digest, []).append(sample.path)
    return [sorted(paths) for paths in by_digest.values() if len(paths) > 1]


def plot_preview(samples: Sequence[Sample], classes: Sequence[str], preprocessing: Preprocessing, augment: str,
                 path: Path, title: str, seed: int = 0) -> None:
    """A grid of training images after ``augment``'s transform, normalisation undone for display, captioned
    with their class."""
    generator = np.random.default_rng(seed)
    chosen = [samples[i] for i in sorted(generator.choice(len(samples), min(PREVIEW_IMAGES, len(samples)),
                                                          replace=False))]
    transform = train_transform(preprocessing, augment)
    mean = torch.tensor(preprocessing.mean).view(3, 1, 1)
    std = torch.tensor(preprocessing.std).view(3, 1, 1)
    torch.manual_seed(seed)
    rows = max(1, math.ceil(len(chosen) / PREVIEW_COLUMNS))
    figure = Figure(figsize=(PREVIEW_COLUMNS * 2.2, rows * 2.5 + 0.6))
    axes = list(figure.subplots(rows, PREVIEW_COLUMNS, squeeze=False).flat)
    for axis in axes:
        axis.set_axis_off()
    for axis, sample in zip(axes, chosen, strict=False):
        tensor = transform(load_rgb(sample.path)) * std + mean  # what the network receives, back in 0–1
        axis.imshow(tensor.clamp(0, 1).permute(1, 2, 0).numpy(), interpolation="nearest")
        axis.set_title(classes[sample.label], fontsize=8)
    figure.suptitle(title, fontsize=10)
    save_figure(figure, path)


def summarize_data(config: RunConfig, split: Split, preprocessing: Preprocessing, augment: str,
                   out: Path | None) -> DataSummary:
    """The summary of ``split`` (made from ``config``'s folder), with ``preview.png`` written to ``out``."""
    everything = [*split.train, *split.val, *split.test]
    counts = {part: class_counts(getattr(split, part), split.classes) for part in ("train", "val", "test")}
    preview = None
    if out is not None and split.train:
        out.mkdir(parents=True, exist_ok=True)
        preview = out / PREVIEW_FILE
        plot_preview(split.train, split.classes, preprocessing, augment, preview,
                     f"{config.model.arch}'s training input at {preprocessing.crop} px, augmentation {augment} "
                     f"(normalisation undone)", seed=config.trainer.seed)
    return DataSummary(split.classes, counts, size_histogram(everything),
                       [(skipped.path, skipped.reason) for skipped in split.skipped], duplicate_groups(everything),
                       augment, preview)


def look_at_data(config: RunConfig, out: Path) -> DataSummary:
    """``zoo data``: scan and split ``config``'s folder as ``zoo finetune`` would, choose its augmentation, and
    summarise it; only ``out`` is written."""
    from finetune.data.builtin import resolve_data
    from finetune.runtime.folders import check_out_folder
    from finetune.training.data_split import make_split
    from finetune.training.setup import choose_settings, preprocessing_of
    from zoo.errors import ZooError
    from zoo.registry import get_spec

    check_out_folder(out)
    data = resolve_data(config.data.path)
    if out.resolve().is_relative_to(Path(data).resolve()):
        raise ZooError(f"--out {out} lies inside the data folder {data}, which zoo data never writes to: choose a "
                       "folder outside it")
    split = make_split(config)
    # Only the settings the preview shows are said: it trains nothing.
    chosen = choose_settings(config, split, unused=("trainer.epochs", "optim.lr", "optim.backbone_lr_mult",
                                                    "optim.freeze"))
    preprocessing = preprocessing_of(chosen, get_spec(chosen.model.arch))
    return summarize_data(chosen, split, preprocessing, chosen.data.augment, out)
