"""The Dataset of samples the DataModule wraps, each image loaded as 8-bit RGB."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from finetune.data.scan import DataError, Sample, check_image
from zoo.errors import describe_error
from zoo.images import load_rgb, load_rgb_pixels
from zoo.text import one_line

Loaded = TypeVar("Loaded")


class UnreadableImageError(DataError):
    """An image the scan read that can no longer be read: the file changed during the run."""

    def __str__(self) -> str:
        # Raised in a DataLoader worker, the error comes back with the worker's traceback in its message:
        # its last line is this error's own one-line message.
        lines = [line for line in str(self.args[0] if self.args else "").splitlines() if line.strip()]
        last = lines[-1] if lines else ""
        return one_line(last.split("UnreadableImageError: ", 1)[-1])


def read_scanned_image(path: Path) -> Image.Image:
    """``load_rgb`` for an image the scan already read; a failure now means the file changed since."""
    return _read_scanned(path, load_rgb)


def read_scanned_pixels(path: Path) -> Tensor:
    """``read_scanned_image`` as a 3×H×W uint8 tensor (``load_rgb_pixels``)."""
    return _read_scanned(path, load_rgb_pixels)


def _read_scanned(path: Path, load: Callable[[Path], Loaded]) -> Loaded:
    try:
        return load(path)
    except Exception as error:  # noqa: BLE001 - image plugins raise many kinds of error on a damaged file
        raise UnreadableImageError(
            f"cannot read {path} ({check_image(path) or describe_error(error)}), though the scan read it: "
            "the file changed since; replace it with a good copy"
        ) from None


class ImageDataset(Dataset[tuple[Any, int]]):
    """Samples as ``(transform(image), label)``, the image 8-bit RGB from ``load_rgb``."""

    def __init__(self, samples: Sequence[Sample], transform: Callable[[Image.Image], Any] | None = None) -> None:
        self.samples = list(samples)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        sample = self.samples[index]
        image = read_scanned_image(sample.path)
        return (image if self.transform is None else self.transform(image)), sample.label
