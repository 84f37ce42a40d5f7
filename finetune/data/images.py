"""The Dataset of samples the DataModule wraps, each image loaded as 8-bit RGB."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from PIL import Image
from torch.utils.data import Dataset

from finetune.data.scan import Sample
from zoo.images import load_rgb

__all__ = ["ImageDataset", "load_rgb"]

class ImageDataset(Dataset[tuple[Any, int]]):
    """Samples as ``(transform(image), label)``, the image 8-bit RGB from ``load_rgb``."""

    def __init__(self, samples: Sequence[Sample], transform: Callable[[Image.Image], Any] | None = None) -> None:
        self.samples = list(samples)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        sample = self.samples[index]
        image = load_rgb(sample.path)
        return (image if self.transform is None else self.transform(image)), sample.label
