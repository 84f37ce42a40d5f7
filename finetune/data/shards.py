"""A split written as LitData chunks (``zoo data optimize``) and streamed back, locally or from a URL (s3://…).

``SHARDS/<part>/`` holds each part's chunks (LitData's ``index.json`` and ``chunk-*.bin``), every sample
an image and its label: validation and test in the order of the split, training in a seeded random order (LitData
shuffles the chunks and the samples inside each, so chunks written class by class would give batches of one class);
``SHARDS/zoo_shards.json``, written last, names the classes, each sample's label and original file, and the training
images' profile (what the recipe looks at), so a run plans itself without opening a chunk.

What a sample holds (``decoded``):

- ``auto`` (the default): an image of at most ``SMALL_PIXELS`` (96×96) is stored decoded at its own size, its
  uint8 pixels (3×H×W) with its height and width. Decoding such an image costs a large share of what a small
  network's step spends on it (a 32 px PNG: ~60 µs of ~650 on 2 cores), and its pixels take little room: 3 KB at
  32 px, 27 KB at most (the scale benchmark's noisy 32 px PNGs take 2.9 KB). A larger image is stored as its file's
  own bytes, a fraction of its pixels.
- ``none``: every image as its file's own bytes.
- a side: every image decoded, a uint8 square of that side (shorter side resized, centred), as the decode-once
  cache stores it: larger chunks, but training only crops whole batches.

Bytes are decoded as they stream (in the loader's workers, or in the training process where it has none); then
every image is made the square the decode-once cache would hold and cropped, batch by batch as a folder's are, each
DDP process and node reading its own share.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from finetune.data.decoded import SMALL_PIXELS
from finetune.data.images import Loaded
from finetune.data.scan import DataError, Sample
from finetune.data.settings import OptimizeSettings
from finetune.data.split import PARTS, Split, split_folder
from finetune.runtime.folders import check_out_folder
from zoo._io import replacing_folder, write_text_atomic
from zoo.cache import cache_root
from zoo.errors import first_line
from zoo.images import load_rgb, load_rgb_pixels, opened

if TYPE_CHECKING:
    from torch import Tensor

    from finetune.training.recipe import DataProfile

MANIFEST = "zoo_shards.json"
LITDATA_INDEX = "index.json"
FORMAT_VERSION = 3  # 1: training samples in class order; 2: no small image stored decoded (still read)
READABLE_FORMATS = (2, FORMAT_VERSION)
MAX_DECODED_SIDE = 1024  # a decoded square of 1024 px is 3 MB: 21 images fill a chunk
CHUNK_BYTES = "64MB"  # LitData's advice: chunks of tens of MB stream well from object storage


@dataclass(frozen=True)
class ShardSplit(Split):
    """A split read from shards at ``location`` (a folder or a URL); its samples name the original files."""

    location: str = ""
    profile: dict[str, Any] | None = None  # recipe.DataProfile's fields, measured when the shards were written
    fractions: dict[str, float] | None = None  # the val_fraction and test_fraction they were split with
    decoded: int | str | None = None  # the side of the decoded squares the samples hold, "auto" or None (see above)

    def part(self, name: str) -> str:
        """Where the chunks of the part ``name`` live."""
        return f"{self.location.rstrip('/')}/{name}"


def is_url(data: str) -> bool:
    """Whether ``data`` names remote storage (``s3://``, ``gs://``, …) rather than a local path."""
    return "://" in data and not data.startswith("file://")


def is_shards(data: str) -> bool:
    """Whether ``--data`` means shards: a URL, or a local folder holding zoo's manifest or LitData's index."""
    if is_url(data):
        return True
    path = Path(data)
    return (path / MANIFEST).is_file() or (path / LITDATA_INDEX).is_file()


def _read_image(item: tuple[str, int, int, bool]) -> dict[str, Any]:
    # Module-level: LitData's worker processes receive it by pickling.
    path, label, index, decode_small = item
    data = Path(path).read_bytes()
    pixels = _small_pixels(data) if decode_small else None
    if pixels is None:  # the file's bytes; a height of 0 says so
        return {"index": index, "label": label, "image": data, "height": 0, "width": 0}
    return {"index": index, "label": label, "image": pixels.numpy().tobytes(), "height": pixels.shape[1],
            "width": pixels.shape[2]}


def _small_pixels(data: bytes) -> Tensor | None:
    """An image file's uint8 pixels (3×H×W) if it holds at most ``SMALL_PIXELS``; None for a larger one."""
    with opened(data) as image:
        small = image.width * image.height <= SMALL_PIXELS
    return load_rgb_pixels(data) if small else None


def _read_square(item: tuple[str, int, int, int]) -> dict[str, Any]:
    from torchvision.transforms import InterpolationMode

    from finetune.data.decoded import decode_square

    path, label, index, side = item
    return {"index": index, "label": label,
            "pixels": decode_square(Path(path), side, side, InterpolationMode.BILINEAR).numpy()}


def optimize_folder(root: Path, out: Path, val_fraction: float = OptimizeSettings.val_fraction,
                    test_fraction: float = OptimizeSettings.test_fraction, seed: int = OptimizeSettings.seed,
                    workers: int | None = OptimizeSettings.workers,
                    decoded: int | Literal["auto", "none"] = OptimizeSettings.decoded) -> ShardSplit:
    """Split ``root`` as ``zoo finetune`` would and write each part to ``out`` as LitData chunks: small images
    decoded and the others as their files' bytes (``decoded="auto"``), every file's bytes (``"none"``), or every image
    decoded as a square of side ``decoded`` (see the module's docstring).

    ``out`` is written beside and swapped in whole, so a failed run leaves no half shard folder.
    """
    side = decoded if isinstance(decoded, int) else None
    if side is None and decoded not in ("auto", "none"):
        raise DataError(f"--decoded {decoded}: give auto, none or the side of decoded squares in px")
    if side is not None and side < 8:
        raise DataError(f"--decoded {side} is too small to train on: give the side of the squares in px, 8 or more")
    if side is not None and side > MAX_DECODED_SIDE:
        raise DataError(f"--decoded {side} would store {3 * side**2:,} bytes an image: give the run's resize "
                        f"size, at most {MAX_DECODED_SIDE} px (256 for 224 px crops), or leave --decoded out")
    from litdata import optimize

    from finetune.training.recipe import profile_data

    out = Path(out)
    check_out_folder(out)
    if out.is_dir() and any(out.iterdir()):
        raise DataError(f"--out {out} already holds files: choose a new folder for the shards")
    split = split_folder(root, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    profile = asdict(profile_data(split))
    order = np.random.default_rng(seed).permutation(len(split.train))
    split = replace(split, train=[split.train[index] for index in order])
    workers = workers or max(1, min(os.cpu_count() or 1, 8))
    with replacing_folder(out) as staging:
        for part in PARTS:
            samples = getattr(split, part)
            if not samples:
                continue
            items = [(str(sample.path), sample.label, index, decoded == "auto" if side is None else side)
                     for index, sample in enumerate(samples)]
            # keep_data_ordered: the chunks hold the samples in the order given (predictions.csv follows it).
            optimize(fn=_read_image if side is None else _read_square, inputs=items,
                     output_dir=str(staging / part), chunk_bytes=CHUNK_BYTES,
                     num_workers=min(workers, len(items)), keep_data_ordered=True, verbose=False,
                     start_method="fork")
        manifest = {
            "format": FORMAT_VERSION,
            "source": str(Path(root).absolute()),
            "classes": split.classes,
            "profile": profile,
            "parts": {part: {"labels": [sample.label for sample in getattr(split, part)],
                             "files": [str(sample.path.absolute()) for sample in getattr(split, part)]}
                      for part in PARTS},
            "skipped": len(split.skipped),
            "fractions": {"val_fraction": val_fraction, "test_fraction": test_fraction},
            "decoded": None if decoded == "none" else decoded,
        }
        write_text_atomic(staging / MANIFEST, json.dumps(manifest) + "\n")
    return _from_manifest(manifest, str(out))


def load_shards(location: str) -> ShardSplit:
    """The split of the shards at ``location``, checked before any work: zoo's manifest, LitData's index of
    every part, and (locally) each chunk file's size as the index records it."""
    manifest = _read_manifest(location)
    split = _from_manifest(manifest, location)
    if not is_url(location):
        for part in PARTS:
            if getattr(split, part):
                check_chunks(Path(split.part(part)))
    return split


def _read_manifest(location: str) -> dict[str, Any]:
    if is_url(location):
        text = _download_text(f"{location.rstrip('/')}/{MANIFEST}")
    else:
        folder = Path(location)
        if not (folder / MANIFEST).is_file():
            what = ("LitData chunks without zoo's manifest" if (folder / LITDATA_INDEX).is_file()
                    else "no shard folder")
            raise DataError(f"{folder} holds {what} ({MANIFEST} missing): write it with zoo data optimize IMAGES "
                            f"--out {folder}")
        try:
            text = (folder / MANIFEST).read_text(encoding="utf-8")
        except OSError as error:
            raise DataError(f"cannot read {folder / MANIFEST}: {error.strerror or error}; make it readable") from error
    try:
        manifest = json.loads(text)
        if manifest.get("format") == 1:
            raise DataError(f"{location} was written by an older zoo (shard format {manifest['format']}, its training "
                            "images in class order: every batch would hold one class); write the shards again with "
                            "zoo data optimize")
        if manifest.get("format") not in READABLE_FORMATS:
            raise ValueError(f"format {manifest.get('format')}, not {' or '.join(map(str, READABLE_FORMATS))}")
    except (ValueError, AttributeError) as error:
        raise DataError(f"{location}/{MANIFEST} is not a manifest of zoo data optimize ({first_line(error)}); "
                        "write the shards again with zoo data optimize") from error
    return manifest


def _download_text(url: str) -> str:
    """A small file of remote storage, read with LitData's own client (its credentials: AWS_PROFILE, …)."""
    from litdata.streaming.fs_provider import _get_fs_provider

    with tempfile.TemporaryDirectory() as folder:
        local = os.path.join(folder, "file")
        try:
            _get_fs_provider(url).download_file(url, local)
            return Path(local).read_text(encoding="utf-8")
        # Each storage client (boto3, google-cloud-storage) raises its own errors for a missing bucket or key,
        # no credentials, no network, or the client not installed.
        except Exception as error:  # noqa: BLE001
            raise DataError(f"cannot read {url} ({first_line(error)}): check the URL, that the shards were "
                            "uploaded there, your storage credentials and the network") from None


def _from_manifest(manifest: dict[str, Any], location: str) -> ShardSplit:
    classes = list(manifest["classes"])
    parts = {part: [Sample(Path(file), int(label)) for file, label in
                    zip(manifest["parts"][part]["files"], manifest["parts"][part]["labels"], strict=True)]
             for part in PARTS}
    return ShardSplit(classes, parts["train"], parts["val"], parts["test"], [], location=location,
                      profile=manifest["profile"], fractions=manifest.get("fractions"), decoded=manifest.get("decoded"))


def check_chunks(folder: Path) -> None:
    """Refuse a local part whose LitData index is missing or unreadable, or whose chunks are missing or of
    another size than the index records (a copy cut short, a damaged file)."""
    try:
        index = json.loads((folder / LITDATA_INDEX).read_text(encoding="utf-8"))
        chunks = [(chunk["filename"], int(chunk["chunk_bytes"])) for chunk in index["chunks"]]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DataError(f"{folder} is not a part written by LitData ({LITDATA_INDEX}: {first_line(error)}); write "
                        "the shards again with zoo data optimize") from error
    for name, size in chunks:
        path = folder / name
        actual = path.stat().st_size if path.is_file() else None
        if actual != size:
            found = "is missing" if actual is None else f"has {actual:,} bytes, not the {size:,} its index records"
            raise DataError(f"chunk {path} {found}: the shards are damaged; copy them again or write them again "
                            "with zoo data optimize")


def profile_of(split: ShardSplit) -> DataProfile:
    """The training images' profile recorded when the shards were written."""
    from finetune.training.recipe import DataProfile

    return DataProfile(**(split.profile or {}))


def shard_cache_dir() -> str:
    """Where chunks streamed from a URL are kept while they are read (LitData evicts them past its budget)."""
    return str(cache_root() / "shards")


class DecodeSample:
    """Turn a streamed ``{"image": bytes, "label": int}`` into ``(transform(image), label)``; with ``pixels``, the
    image's uint8 pixels (3×H×W) instead, for ``CropBatch(squares=...)`` to make squares of and crop batch by batch.
    ``"image"`` is a file's bytes, or with a ``"height"`` and ``"width"`` the image's decoded pixels; a sample of
    decoded squares holds ``"pixels"`` instead."""

    def __init__(self, transform: Callable[[Image.Image], Any] | None, location: str, pixels: bool = False) -> None:
        self.transform = transform
        self.location = location
        self.pixels = pixels

    def __call__(self, item: dict[str, Any]) -> tuple[Any, int]:
        label = int(item["label"])
        pixels = _stored_pixels(item)
        if pixels is not None:
            from torchvision.transforms.v2 import functional as F

            return (pixels, label) if self.pixels else (self._transformed(F.to_pil_image(pixels)), label)
        if self.pixels:  # decoding is the worker's share of the work; squares and crops are made batch by batch
            return self._decoded(item, load_rgb_pixels), label
        return self._transformed(self._decoded(item, load_rgb)), label

    def _transformed(self, image: Image.Image) -> Any:
        return image if self.transform is None else self.transform(image)

    def _decoded(self, item: dict[str, Any], load: Callable[[bytes], Loaded]) -> Loaded:
        try:
            return load(bytes(item["image"]))
        except Exception as error:  # noqa: BLE001 - image plugins raise many kinds of error on damaged bytes
            raise DataError(f"sample {item.get('index')} of {self.location} is not a readable image "
                            f"({first_line(error)}): the shards are damaged; write them again with zoo data "
                            "optimize") from None


def _stored_pixels(item: dict[str, Any]) -> Tensor | None:
    """The uint8 pixels (3×H×W) a sample holds decoded, or None where it holds a file's bytes."""
    import torch

    if "pixels" in item:
        return torch.from_numpy(np.asarray(item["pixels"]))
    if not item.get("height"):  # 0, or shards written before small images were stored decoded
        return None
    # A copy: LitData's bytes are read-only, and a tensor over them would be writable.
    pixels = np.frombuffer(item["image"], np.uint8).reshape(3, int(item["height"]), int(item["width"])).copy()
    return torch.from_numpy(pixels)


def shard_dataset(split: ShardSplit, part: str, transform: Callable[[Image.Image], Any] | None, *, shuffle: bool,
                  seed: int, alone: bool = False, pixels: bool = False) -> Any:
    """A LitData ``StreamingDataset`` of ``part``, decoding each image in the worker that reads it.

    Made inside each process (in ``setup``), it reads that process's share of a distributed run; ``alone``
    gives every sample by its index, in order, whatever the processes (for a sampler to share out); ``pixels``
    gives each image's uint8 pixels instead of ``transform``'s output (``DecodeSample``).
    """
    from litdata import StreamingDataset

    location = split.part(part)
    try:
        # Training drops the last few samples so every process takes as many steps (DDP waits on each step's
        # gradients).
        # LitData shuffles the chunks, and blocks of 256 samples in each (a block is read from the chunk at once):
        # batches mix the classes because the training samples were written in a random order.
        dataset = StreamingDataset(location, cache_dir=shard_cache_dir() if is_url(location) else None,
                                   shuffle=shuffle, drop_last=shuffle, seed=seed,
                                   transform=DecodeSample(transform, location, pixels))
    except Exception as error:  # noqa: BLE001 - LitData and the storage clients raise many kinds of error
        raise DataError(f"cannot open the shards {location} ({first_line(error)}): check the path or URL, your "
                        "storage credentials and the network") from None
    return EverySample(dataset, len(getattr(split, part))) if alone else dataset


class EverySample(Dataset[tuple[Any, int]]):
    """A streaming dataset read by index: every sample in order in this process, not its share of them."""

    def __init__(self, streaming: Any, count: int) -> None:
        self.streaming = streaming
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> tuple[Any, int]:
        return self.streaming[index]


def refuse_shards(data: str, command: str) -> None:
    """Refuse shards in a command that reads the image files themselves, naming the folder they were written from."""
    if is_shards(data):
        source = _read_manifest(data).get("source", "the image folder")
        raise DataError(f"zoo {command} reads image files, not shards: pass {source}, the folder {data} was "
                        "written from")
