"""Decode-once image cache: each image decoded and resized once to uint8, then cropped as a tensor each epoch.

Decoding and resizing a JPEG costs more than many small models' forward pass. Each image is stored as
the square its evaluation transform would centre-crop from, at the resize size (256 px for 224 px
crops): centre-cropping it cuts the same pixels as from the full image, and random crops are drawn
inside that square instead of the whole (possibly wider) photo. ``CropBatch`` crops, flips and
normalises a whole batch at once; augmentations that only exist per image (TrivialAugment) run the
usual transforms on each square (``Resize`` finds it already at size and does nothing).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from finetune.data.cache_store import cache_key, cache_path
from finetune.data.images import read_scanned_pixels
from finetune.data.scan import Sample
from finetune.runtime.hardware import usable_cores
from finetune.runtime.progress import PhaseTimes, tracked
from zoo._io import write_atomic

FORMAT_VERSION = 1  # bump when the stored pixels change meaning
SMALL_PIXELS = 96 * 96  # images up to this size are decoded one after another and resized together ...
CHUNK_IMAGES = 256  # ... this many at a time
CHUNK_PIXELS = 16 * 2**20  # ... or fewer, holding this many pixels (48 MB)


def decoded_bytes(num_images: int, side: int) -> int:
    """Memory the decoded images take: RGB uint8 squares of ``side`` px."""
    return num_images * 3 * side * side


def _centred_start(length: int, side: int, crop: int) -> int:
    # Centre-cropping ``crop`` from this square must cut the pixels that centre-cropping ``crop`` from
    # the whole resized image cuts; torchvision rounds each centre offset on its own, so the square's
    # offset is the difference of the two rounded offsets, not (length - side) / 2.
    return int(round((length - crop) / 2.0)) - int(round((side - crop) / 2.0))


def decode_square(path: Path, side: int, crop: int, interpolation: InterpolationMode) -> Tensor:
    """``path`` as a 3×side×side uint8 tensor: shorter side resized to ``side``, centred for ``crop``."""
    return square_of(read_scanned_pixels(path), side, crop, interpolation)


def square_of(pixels: Tensor, side: int, crop: int, interpolation: InterpolationMode) -> Tensor:
    """An image's 3×H×W uint8 ``pixels`` (or N×3×H×W, images of one size) as the decode-once cache holds them (see
    ``decode_square``)."""
    image = F.resize(pixels, [side], interpolation=interpolation, antialias=True)
    height, width = image.shape[-2:]
    top, left = _centred_start(height, side, crop), _centred_start(width, side, crop)
    return image[..., top : top + side, left : left + side]


@dataclass(frozen=True)
class Squares:
    """Images as the decode-once cache's uint8 squares: shorter side resized to ``side`` with ``interpolation``,
    centred for crops of ``crop`` px."""

    side: int
    crop: int
    interpolation: str = "bilinear"

    def of(self, images: Sequence[Tensor]) -> list[Tensor]:
        """``images`` (3×H×W uint8, of any sizes) as these squares, in order. Images of one size are resized
        together: for 32 px PNGs about 13 µs an image, against 33-68 µs one at a time."""
        squares: list[Tensor] = list(images)
        by_size: dict[tuple[int, ...], list[int]] = {}
        for index, image in enumerate(images):
            by_size.setdefault(tuple(image.shape), []).append(index)
        for indices in by_size.values():
            batch = torch.stack([images[index] for index in indices])
            for index, square in zip(indices, square_of(batch, self.side, self.crop,
                                                        InterpolationMode(self.interpolation)), strict=True):
                squares[index] = square
        return squares


def decode_all(paths: Sequence[Path], side: int, crop: int, interpolation: InterpolationMode, out: np.ndarray,
               times: PhaseTimes | None = None) -> None:
    """Decode ``paths`` into ``out`` (N×3×side×side uint8), progress shown, time to ``times``.

    Images as small as the first (at most ``SMALL_PIXELS``) are decoded one after another and resized
    ``CHUNK_IMAGES`` at a time (``Squares.of``): Python's work per image outweighs the decoder's, and threads only
    wait for each other (sklearn's 1,797 digits: 0.16 s, against 0.56 s one at a time in two threads). Larger images
    are decoded and resized each in one of the threads, whose C work runs side by side (500 JPEG photos: 0.5 s,
    against 1.0 s in batches).
    """
    if not paths:
        return
    first = read_scanned_pixels(paths[0])  # its size chooses the way; it is not decoded again
    with ThreadPoolExecutor(max_workers=usable_cores()) as pool:  # its threads start only for large images
        if math.prod(first.shape[-2:]) <= SMALL_PIXELS:
            images = itertools.chain([first], map(read_scanned_pixels, paths[1:]))
            squares = _small_squares(images, Squares(side, crop, interpolation.value))
        else:
            squares = itertools.chain([square_of(first, side, crop, interpolation)],
                                      pool.map(lambda path: decode_square(path, side, crop, interpolation), paths[1:]))
        for index, square in enumerate(tracked(squares, len(paths), "decode", "decoding images once", times)):
            out[index] = square.numpy()


def _small_squares(images: Iterable[Tensor], squares: Squares) -> Iterator[Tensor]:
    """The squares of ``images``, made a chunk at a time: up to ``CHUNK_IMAGES`` images, fewer when they hold
    ``CHUNK_PIXELS`` (a folder of small images can still hold large ones)."""
    chunk: list[Tensor] = []
    pixels = 0
    for image in images:
        chunk.append(image)
        pixels += math.prod(image.shape[-2:])
        if len(chunk) == CHUNK_IMAGES or pixels >= CHUNK_PIXELS:
            yield from squares.of(chunk)
            chunk, pixels = [], 0
    yield from squares.of(chunk)


def decoded_pixels(samples: Sequence[Sample], side: int, crop: int, interpolation: InterpolationMode,
                   where: str, times: PhaseTimes | None = None) -> np.ndarray:
    """The decoded images of ``samples``, in ``memory`` or memory-mapped from a file in the ``disk`` cache.

    The disk entry is keyed by the files and the sizes, so a later run reads it instead of decoding.
    """
    shape = (len(samples), 3, side, side)
    paths = [sample.path for sample in samples]
    if where == "memory":
        pixels = np.empty(shape, dtype=np.uint8)
        decode_all(paths, side, crop, interpolation, pixels, times)
        return pixels
    key = cache_key(samples, version=FORMAT_VERSION, side=side, crop=crop, interpolation=interpolation.value)
    path = cache_path("decoded", key, ".npy")
    if not path.is_file():

        def write(temporary: Path) -> None:
            pixels = np.lib.format.open_memmap(temporary, mode="w+", dtype=np.uint8, shape=shape)
            decode_all(paths, side, crop, interpolation, pixels, times)
            pixels.flush()

        write_atomic(path, write)
    return np.load(path, mmap_mode="r")


class DecodedImages(Dataset[tuple[Any, int]]):
    """Samples as ``(pixels[i], label)`` from decoded uint8 squares (see ``decoded_pixels``), or with
    ``transform`` applied to each (for augmentations that only exist per image, like TrivialAugment).
    """

    def __init__(self, pixels: np.ndarray, labels: Sequence[int],
                 transform: Callable[[Tensor], Any] | None = None) -> None:
        self.pixels = pixels
        self.labels = list(labels)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        # A copy: a memory-mapped file is read-only, and no transform may write into the cache.
        image = torch.from_numpy(np.array(self.pixels[index]))
        return (image if self.transform is None else self.transform(image)), self.labels[index]


class CropBatch:
    """Collate decoded squares into a normalised float batch, cropping the whole batch at once.

    Per-image transforms cost about a millisecond of Python per image, more than a small network's
    share of a step; on the batch, a step's crops take a few tensor operations. With ``augment``:
    RandomResizedCrop's crops (area share ``scale``) and a horizontal flip (see ``random_resized_crops``).
    Without: the centre crop, which gives exactly the plain pipeline's tensors; with ``shift``, that crop moved by up
    to ``shift`` pixels each way (``random_shifts``). With ``squares``, the samples hold whole decoded images of any
    size, made those squares first (byte shards).
    """

    def __init__(self, image_size: int, mean: Sequence[float], std: Sequence[float], augment: bool,
                 scale: tuple[float, float] = (0.08, 1.0), squares: Squares | None = None, shift: int = 0) -> None:
        self.image_size = image_size
        self.mean = list(mean)
        self.std = list(std)
        self.augment = augment
        self.scale = scale
        self.squares = squares
        self.shift = shift

    def __call__(self, samples: list[tuple[Tensor, int]]) -> tuple[Tensor, Tensor]:
        pixels = [image for image, _ in samples]
        images = torch.stack(pixels if self.squares is None else self.squares.of(pixels))
        labels = torch.tensor([label for _, label in samples])
        if self.augment:
            crops = random_resized_crops(F.to_dtype(images, torch.float32, scale=True), self.image_size,
                                         scale=self.scale)
        elif self.shift:
            crops = F.to_dtype(random_shifts(images, self.image_size, self.shift), torch.float32, scale=True)
        else:
            crops = F.to_dtype(F.center_crop(images, [self.image_size]), torch.float32, scale=True)
        return F.normalize(crops, self.mean, self.std), labels


def random_shifts(images: Tensor, size: int, shift: int) -> Tensor:
    """The centre crop at ``size`` of each square of ``images`` (N×C×S×S), moved by a whole number of pixels drawn
    uniformly from −``shift``…``shift`` along each axis; beyond the square its edge pixels repeat (as the per-image
    ``shift`` transform pads them)."""
    count, side = len(images), images.shape[-1]
    padded = nn.functional.pad(images, [shift] * 4, mode="replicate")
    start = round((side - size) / 2) + shift  # F.center_crop's offset, in the padded squares
    rows = start + torch.randint(-shift, shift + 1, (count, 1)) + torch.arange(size)  # N×size
    columns = start + torch.randint(-shift, shift + 1, (count, 1)) + torch.arange(size)
    batch = torch.arange(count).view(count, 1, 1)
    return padded.permute(0, 2, 3, 1)[batch, rows.unsqueeze(2), columns.unsqueeze(1)].permute(0, 3, 1, 2)


def random_resized_crops(images: Tensor, size: int, flip: float = 0.5, scale: tuple[float, float] = (0.08, 1.0),
                         ratio: tuple[float, float] = (3 / 4, 4 / 3), attempts: int = 10) -> Tensor:
    """A random crop of each square of ``images`` (N×C×S×S float), flipped with probability ``flip``, at ``size``.

    Crops are drawn as torchvision's RandomResizedCrop draws them (area share ``scale``, aspect
    ``ratio``, the first of ``attempts`` that fits, else the whole square) and resampled bilinearly in
    one ``grid_sample``. Antialiasing is not needed: a crop of the square is at most S / size (8/7 at
    the usual crop fraction) times larger than the output.
    """
    count, side = len(images), images.shape[-1]
    area = side * side * torch.empty(count, attempts).uniform_(*scale)
    aspect = torch.exp(torch.empty(count, attempts).uniform_(math.log(ratio[0]), math.log(ratio[1])))
    width, height = torch.sqrt(area * aspect).round(), torch.sqrt(area / aspect).round()
    fits = (width > 0) & (width <= side) & (height > 0) & (height <= side)
    first = fits.int().argmax(dim=1, keepdim=True)
    found = fits.any(dim=1)
    width = torch.where(found, width.gather(1, first).squeeze(1), side)
    height = torch.where(found, height.gather(1, first).squeeze(1), side)
    top = (torch.rand(count) * (side - height + 1)).floor()
    left = (torch.rand(count) * (side - width + 1)).floor()
    # The affine map from output to input coordinates in [-1, 1]; a negative x scale mirrors the crop.
    mirror = torch.where(torch.rand(count) < flip, -1.0, 1.0)
    theta = torch.zeros(count, 2, 3)
    theta[:, 0, 0] = mirror * width / side
    theta[:, 0, 2] = (2 * left + width) / side - 1
    theta[:, 1, 1] = height / side
    theta[:, 1, 2] = (2 * top + height) / side - 1
    grid = nn.functional.affine_grid(theta.to(images), [count, images.shape[1], size, size], align_corners=False)
    return nn.functional.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
