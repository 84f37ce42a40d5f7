"""Built-in data sets, written once as image folders so they take the same path as the user's own."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from finetune.data.scan import DataError
from zoo._io import DiskError, replacing_folder
from zoo.cache import cache_root
from zoo.errors import first_line

COMPLETE_MARKER = ".complete"  # hidden, so scanning the folder ignores it


def _write_digits(folder: Path) -> None:
    # Imported here: scikit-learn is slow to import and only needed once. Digits ships inside it, no download.
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.rint(digits.images * (255 / 16)).astype(np.uint8)  # 0..16 gray levels to 0..255
    for index, (image, digit) in enumerate(zip(pixels, digits.target, strict=True)):
        (folder / str(digit)).mkdir(exist_ok=True)
        Image.fromarray(image).save(folder / str(digit) / f"{index}.png")


_WRITERS: dict[str, Callable[[Path], None]] = {"digits": _write_digits}
BUILTIN_DATASETS = tuple(_WRITERS)


def resolve_data(data: str, cache_dir: Path | None = None) -> Path:
    """The image folder for ``data``: a built-in data set's, written on first use, else ``Path(data)``."""
    path = Path(data)
    if data not in _WRITERS or path.exists():
        return path
    target = cache_root(cache_dir) / "datasets" / data
    if not (target / COMPLETE_MARKER).is_file():
        # Written beside and swapped in whole, so an interrupted run never leaves a half data set behind.
        try:
            with replacing_folder(target) as staging:
                _WRITERS[data](staging)
                (staging / COMPLETE_MARKER).touch()
        except (OSError, DiskError) as error:
            raise DataError(f"cannot write the built-in data set '{data}' to {target} ({first_line(error)}); "
                            "set ZOO_CACHE to a writable folder") from error
    return target
