"""Scanning an ImageFolder tree: one sub-folder per class, every image really decoded once.

A file that cannot be decoded is skipped with a reason instead of failing a training run hours in.
"""

from __future__ import annotations

import gc
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from PIL import UnidentifiedImageError

from finetune.data.scan_cache import cached_checks
from finetune.runtime.progress import tracked
from zoo.errors import ZooError, first_line
from zoo.images import MAX_PIXELS, ImageSizeError, opened

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"})


class DataError(ZooError):
    """An image folder or saved split that cannot be used as training data."""


@dataclass(frozen=True)
class Sample:
    """One image and the index of its class."""

    path: Path
    label: int


@dataclass(frozen=True)
class SkippedFile:
    """An image file left out of the data, and why."""

    path: Path
    reason: str


@dataclass(frozen=True)
class ScanResult:
    """The classes of a folder, its usable images sorted by (class, path), and the files skipped."""

    classes: list[str]
    samples: list[Sample]
    skipped: list[SkippedFile]


def is_image_file(path: Path | str) -> bool:
    """Whether ``path`` (or a file name) has an image suffix (any case) and is not hidden."""
    name = os.path.basename(path)
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def sample_order(sample: Sample) -> tuple[int, tuple[str, ...]]:
    """Sort key of samples: by class, then path (a path's parts order as the path does, compared several times
    faster)."""
    return sample.label, sample.path.parts


@contextmanager
def collection_paused() -> Iterator[None]:
    """Python's cycle collector off while a block makes objects by the hundred thousand that live as long as the run
    (a split's paths and samples), and those objects then moved out of its reach (``gc.freeze``): every later pass
    of the collector walked them again. On 100k files a second scan took 2.1-2.9 s with them, 1.4 s without, and
    300k allocations after it 1.0 s against 0.07."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
        gc.freeze()
    finally:
        if enabled:
            gc.enable()


def scan_folder(root: Path, classes: Sequence[str] | None = None) -> ScanResult:
    """Scan ``root/<class>/**/<image>``; with ``classes`` (e.g. the train split's) labels follow that list."""
    with collection_paused():
        return _scan_folder(Path(os.path.abspath(root)), classes)


def _scan_folder(root: Path, classes: Sequence[str] | None) -> ScanResult:
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise DataError(f"data folder {root} {what}; pass a folder with one sub-folder of images per class")
    try:
        entries = list(root.iterdir())
    except OSError as error:
        raise DataError(f"cannot list data folder {root}: {error.strerror or error}; make it readable") from error
    folders = sorted(entry.name for entry in entries if entry.is_dir() and not entry.name.startswith("."))
    if not folders:
        raise DataError(f"no class sub-folders in {root}; put the images of each class in {root}/<class name>/")
    names = folders if classes is None else list(classes)
    unknown = [name for name in folders if name not in names]
    if unknown:
        raise DataError(
            f"class folder '{unknown[0]}' in {root} is not one of the training classes "
            f"({', '.join(names)}); rename it to a training class or remove it"
        )
    if len(names) < 2:
        raise DataError(
            f"only {len(names)} class folder in {root} ({', '.join(names)}); add a sub-folder per class, at least 2"
        )

    loose = [path for path in entries if path.is_file() and is_image_file(path)]
    skipped = [SkippedFile(path, "not in a class folder") for path in loose]
    label_of = {name: label for label, name in enumerate(names)}
    candidates = []
    for name in folders:
        files, unreadable = _image_files(root / name)
        candidates += [Sample(path, label_of[name]) for path in files]
        skipped += unreadable

    def check_all(paths: Sequence[Path]) -> list[str | None]:
        if not paths:
            return []
        # Decoding is I/O and C code that releases the GIL, so threads scale with the disk.
        with ThreadPoolExecutor() as pool:
            return list(tracked(pool.map(check_image, paths), len(paths), "scan",
                                f"checking the images of {root.name}", None))

    # Files unchanged since an earlier scan keep its verdict instead of being decoded again.
    reasons = cached_checks(root, [sample.path for sample in candidates], check_all)
    samples = [sample for sample, reason in zip(candidates, reasons, strict=True) if reason is None]
    skipped += [SkippedFile(sample.path, reason) for sample, reason in zip(candidates, reasons, strict=True)
                if reason is not None]

    usable = Counter(sample.label for sample in samples)
    for name in folders:
        if not usable[label_of[name]]:
            bad = sum(1 for sample in candidates if sample.label == label_of[name])
            raise DataError(
                f"class folder {root / name} has no usable image ({bad} skipped); "
                f"add readable images ({', '.join(sorted(IMAGE_SUFFIXES))}) to it or remove it"
            )
    samples.sort(key=sample_order)
    skipped.sort(key=lambda file: file.path)
    return ScanResult(names, samples, skipped)


def _image_files(folder: Path) -> tuple[list[Path], list[SkippedFile]]:
    """The image files under ``folder``, and the sub-folders that could not be listed (with the reason)."""
    found: list[Path] = []
    unreadable: list[SkippedFile] = []

    def note(error: OSError) -> None:
        where = Path(error.filename) if error.filename else folder
        unreadable.append(SkippedFile(where, f"folder not readable: {error.strerror or error}"))

    # Symlinked folders are not followed: a link cycle would never end.
    for directory, subfolders, files in os.walk(folder, onerror=note):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        parent = Path(directory)  # a child of a parsed path is made twice as fast as a path from two strings
        found.extend(parent / name for name in files if is_image_file(name))
    return found, unreadable


def check_image(path: Path) -> str | None:
    """Decode ``path`` fully; return why it is unusable, or None when it is a good image."""
    if path.is_symlink() and not path.exists():
        return "broken link"
    if not path.is_file():  # a FIFO, socket or device would block or never end when read
        return "not a regular file"
    try:
        if path.stat().st_size == 0:
            return "empty file"
        with opened(path) as image:  # zoo's one loader: the pixel budget checked before decoding
            image.load()
    except UnidentifiedImageError:
        return "not an image: cannot identify"
    except ImageSizeError:
        return f"too many pixels (over {MAX_PIXELS}: the decompression bomb guard)"
    # Image plugins raise many kinds of error on odd files; one bad file must not stop the scan.
    except Exception as error:  # noqa: BLE001
        message = first_line(error)
        return "truncated image" if "truncat" in message.lower() else f"unreadable: {message}"
    return None
