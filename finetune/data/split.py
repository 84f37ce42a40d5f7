"""Train/val/test splits: the folder's own when it has them, else stratified and seeded; saved as CSV."""

from __future__ import annotations

import csv
import io
import json
import math
import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from finetune.data.scan import DataError, Sample, SkippedFile, collection_paused, sample_order, scan_folder
from zoo._io import read_text, write_csv_atomic, write_text_atomic
from zoo.errors import ZooError, first_line

CLASSES_FILE = "classes.json"
PARTS = ("train", "val", "test")
SAMPLE_COLUMNS = ("path", "label", "class")
SKIPPED_COLUMNS = ("path", "reason")


@dataclass(frozen=True)
class Split:
    """The classes and the samples of each part, plus the files the scan skipped."""

    classes: list[str]
    train: list[Sample]
    val: list[Sample]
    test: list[Sample]
    skipped: list[SkippedFile]


def split_folder(root: Path, val_fraction: float = 0.15, test_fraction: float = 0.15, seed: int = 0) -> Split:
    """The train / val / test split of ``root``: its own sub-folders where it has them, else stratified and seeded.

    ``root/train`` with ``root/val`` are used as they are, and so is ``root/test``; without ``test/``, a
    ``test_fraction`` of ``train/`` is held out as the test split. A plain class folder is split three
    ways. ``test_fraction`` 0 holds out no test images.
    """
    if not 0 < val_fraction < 1:
        raise DataError(f"validation fraction {val_fraction} is not between 0 and 1; pass a fraction such as 0.15")
    if not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise DataError(f"test fraction {test_fraction} with validation fraction {val_fraction} leaves no training "
                        "images; pass fractions such as 0.15 and 0.15")
    with collection_paused():
        return _split_folder(Path(root), val_fraction, test_fraction, seed)


def _split_folder(root: Path, val_fraction: float, test_fraction: float, seed: int) -> Split:
    if not ((root / "train").is_dir() and (root / "val").is_dir()):
        scan = scan_folder(root)
        test, val, train = _stratified(scan.samples, scan.classes, (test_fraction, val_fraction), seed)
        return Split(scan.classes, train, val, test, scan.skipped)
    train_scan = scan_folder(root / "train")
    val_scan = scan_folder(root / "val", train_scan.classes)
    if (root / "test").is_dir():
        test_scan = scan_folder(root / "test", train_scan.classes)
        return Split(train_scan.classes, train_scan.samples, val_scan.samples, test_scan.samples,
                     train_scan.skipped + val_scan.skipped + test_scan.skipped)
    held_out, kept = _stratified(train_scan.samples, train_scan.classes, (test_fraction,), seed)
    return Split(train_scan.classes, kept, val_scan.samples, held_out, train_scan.skipped + val_scan.skipped)


def _stratified(
    samples: Sequence[Sample], classes: Sequence[str], fractions: Sequence[float], seed: int
) -> list[list[Sample]]:
    """One part per fraction, then the rest (the training part), each class split alike.

    Every class keeps at least one image in the rest, and each part with a fraction above 0 gets at least
    one image of a class as long as the class has images to spare: a 3-image class gives one to each.
    """
    parts: list[list[Sample]] = [[] for _ in range(len(fractions) + 1)]
    by_label: list[list[Sample]] = [[] for _ in classes]
    for sample in samples:
        by_label[sample.label].append(sample)
    for name, members in zip(classes, by_label, strict=True):
        # Seeding each class by its name keeps its split unchanged when other classes come or go; the
        # first part is cut first, so the test images stay the same when the validation share changes.
        random.Random(f"{seed}/{name}").shuffle(members)
        start = 0
        for part, count in zip(parts, _part_sizes(len(members), fractions), strict=False):
            part += members[start:start + count]
            start += count
        parts[-1] += members[start:]
    return [sorted(part, key=sample_order) for part in parts]


def _part_sizes(total: int, fractions: Sequence[float]) -> list[int]:
    """Images of one class for each fractional part; one is always left for the rest (training).

    Short of images, the last part (validation, which picks the checkpoint) is served first.
    """
    wanted = [max(1, round(total * fraction)) if fraction > 0 else 0 for fraction in fractions]
    sizes = [0] * len(fractions)
    spare = total - 1
    for floor in (1, None):  # first one image each, then up to the wanted share
        for index in reversed(range(len(fractions))):
            extra = min(spare, (floor or wanted[index]) - sizes[index]) if wanted[index] else 0
            if extra > 0:
                sizes[index] += extra
                spare -= extra
    return sizes


def classes_without(samples: Sequence[Sample], classes: Sequence[str]) -> list[str]:
    """The classes that have no image among ``samples``."""
    present = {sample.label for sample in samples}
    return [name for label, name in enumerate(classes) if label not in present]


def save_split(split: Split, folder: Path) -> None:
    """Write ``train/val/test.csv`` (path,label,class), ``skipped.csv`` (path,reason) and, last, ``classes.json``:
    each file atomically, so a folder holding ``classes.json`` holds the whole split."""
    for part in PARTS:
        rows = [(sample.path.absolute(), sample.label, split.classes[sample.label]) for sample in getattr(split, part)]
        write_csv_atomic(folder / f"{part}.csv", SAMPLE_COLUMNS, rows)
    skipped = [(file.path.absolute(), file.reason) for file in split.skipped]
    write_csv_atomic(folder / "skipped.csv", SKIPPED_COLUMNS, skipped)
    write_text_atomic(folder / CLASSES_FILE, json.dumps(split.classes, ensure_ascii=False, indent=2) + "\n")


def has_split(folder: Path) -> bool:
    """Whether ``save_split`` finished writing a split into ``folder``."""
    return (folder / CLASSES_FILE).is_file()


def load_split(folder: Path) -> Split:
    """Read a split written by ``save_split``; every listed image must still exist."""
    try:
        classes = json.loads(read_text(folder / CLASSES_FILE))
    except (OSError, ValueError, ZooError) as error:
        reason = getattr(error, "strerror", None) or error
        message = f"no readable saved split in {folder} ({CLASSES_FILE}: {reason}); split the data again"
        raise DataError(message) from error
    parts = {part: _read_samples(folder / f"{part}.csv", classes) for part in PARTS}
    skipped = [SkippedFile(Path(path), reason) for path, reason in _read_csv(folder / "skipped.csv", SKIPPED_COLUMNS)]
    missing = [sample.path for samples in parts.values() for sample in samples if not sample.path.is_file()]
    if missing:
        raise DataError(
            f"{len(missing)} image files listed in {folder} no longer exist (first: {missing[0]}); "
            f"restore them or split the data folder again"
        )
    return Split(classes, parts["train"], parts["val"], parts["test"], skipped)


def _read_samples(path: Path, classes: Sequence[str]) -> list[Sample]:
    samples = []
    for line, (image, label, name) in enumerate(_read_csv(path, SAMPLE_COLUMNS), start=2):
        if not (label.isdigit() and int(label) < len(classes) and classes[int(label)] == name):
            raise DataError(
                f"line {line} of {path}: label {label} does not match class '{name}' in {CLASSES_FILE}; "
                f"split the data again"
            )
        samples.append(Sample(Path(image), int(label)))
    return samples


def _read_csv(path: Path, columns: Sequence[str]) -> list[list[str]]:
    try:
        rows = list(csv.reader(io.StringIO(read_text(path), newline="")))
    except (OSError, ValueError, ZooError, csv.Error) as error:  # ValueError: binary data, not UTF-8 text
        reason = getattr(error, "strerror", None) or first_line(error)
        raise DataError(f"cannot read {path} ({reason}); split the data again") from error
    if not rows or tuple(rows[0]) != tuple(columns) or any(len(row) != len(columns) for row in rows):
        raise DataError(f"{path} is not a split file with columns {','.join(columns)}; split the data again")
    return rows[1:]


def class_counts(samples: Iterable[Sample], classes: Sequence[str]) -> dict[str, int]:
    """Images per class, in class order, zero for a class without images."""
    counts = Counter(sample.label for sample in samples)
    return {name: counts[label] for label, name in enumerate(classes)}


def imbalance_ratio(counts: Mapping[str, int]) -> float:
    """Largest class count over the smallest: 1.0 is balanced, ``inf`` when a class is empty."""
    if not counts:
        return 1.0
    smallest, largest = min(counts.values()), max(counts.values())
    return math.inf if smallest == 0 else largest / smallest
