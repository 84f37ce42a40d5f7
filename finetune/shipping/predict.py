"""``predict``: the top-k classes of image files, one unreadable file never stopping the others."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from PIL import Image

from finetune.data.scan import check_image, is_image_file
from finetune.shipping.settings import PredictSettings
from zoo.bundle import LoadedModel
from zoo.errors import ZooError, first_line
from zoo.images import ImageSizeError

NOT_REGULAR = "not a regular file (a pipe, socket or device)"


@dataclass(frozen=True)
class Prediction:
    """The top-k ``(class, probability)`` of one image, best first; or why it could not be read."""

    path: Path
    top: list[tuple[str, float]] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        predictions = [{"class": name, "probability": probability} for name, probability in self.top]
        return {"path": str(self.path), "predictions": predictions, "error": self.error}


def image_paths(paths: Sequence[Path]) -> list[Path]:
    """Files as given, folders expanded recursively to their image files (sorted, hidden ones left out)."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.exists() and not path.is_dir() and not path.is_file():
            # Reading a FIFO waits for a writer that may never come: zoo would hang.
            raise ZooError(f"{path} is {NOT_REGULAR}: pass image files or folders")
        if not path.is_dir():
            found.append(path)  # missing or unreadable files are reported per image, not as a crash
            continue
        for directory, subfolders, files in os.walk(path):
            subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
            found.extend(Path(directory, name) for name in sorted(files) if is_image_file(name))
    if not found:
        raise ZooError(f"no image files in {', '.join(map(str, paths))}")
    return found


def read_image(model: LoadedModel, path: Path) -> Image.Image | str:
    """The image as 8-bit RGB, read for ``model``, or why it cannot be read."""
    if not path.exists():
        return "no such file"
    if not path.is_file():  # a FIFO with an image's name in a folder, never opened
        return NOT_REGULAR
    try:
        return model.open_rgb(path)
    except ImageSizeError as error:  # refused from its header: decoding it to say more would defeat the budget
        return str(error)
    # Image plugins raise many kinds of error on odd files; one bad file must not stop the others.
    except Exception as error:  # noqa: BLE001
        return check_image(path) or f"unreadable: {first_line(error)}"


def _batches(paths: Sequence[Path], size: int) -> Iterator[Sequence[Path]]:
    for start in range(0, len(paths), size):
        yield paths[start : start + size]


def predict(model: LoadedModel, paths: Sequence[Path], top_k: int = PredictSettings.top_k,
            batch_size: int = PredictSettings.batch_size) -> list[Prediction]:
    """Predict every image of ``paths`` (files or folders), in order; ``top_k`` is capped at the class count."""
    if top_k < 1 or batch_size < 1:
        raise ZooError(f"--top-k and --batch-size must be at least 1, got {top_k} and {batch_size}")
    k = min(top_k, len(model.classes))
    results: list[Prediction] = []
    # Decoding is I/O and C code that releases the GIL, so threads read a batch's images in parallel.
    with ThreadPoolExecutor() as pool:
        for batch in _batches(image_paths(paths), batch_size):
            images = list(pool.map(partial(read_image, model), batch))
            readable = [i for i, image in enumerate(images) if not isinstance(image, str)]
            tops = {}
            if readable:
                values, indices = model.predict_proba([images[i] for i in readable]).topk(k, dim=1)
                for i, row_values, row_indices in zip(readable, values.tolist(), indices.tolist(), strict=True):
                    tops[i] = [(model.classes[c], round(p, 6)) for c, p in zip(row_indices, row_values, strict=True)]
            results += [
                Prediction(path, tops[i]) if i in tops else Prediction(path, error=str(images[i]))
                for i, path in enumerate(batch)
            ]
    return results
