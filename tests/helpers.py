"""Helpers the tests share: tiny real image folders, a short real run and its files, a malicious pickle.

Fixtures live in conftest.py and use these; tests import them from here, never from conftest.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import pickle
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from finetune.config import RunConfig, merge
from finetune.training.run import train


def hermetic(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point zoo's, torch's and Hugging Face's caches into the session's temporary folder and keep zoo offline."""
    base = tmp_path_factory.getbasetemp()
    monkeypatch.setenv("ZOO_CACHE", str(base / "zoo-cache"))
    monkeypatch.setenv("TORCH_HOME", str(base / "torch-home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(base / "hf-hub"))  # timm's weights
    monkeypatch.setenv("ZOO_OFFLINE", "1")


def shorten_measurements(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shorter timings and range tests than a user's: the tests check what they produce, not their figures."""
    monkeypatch.setattr("finetune.compare.speed.MIN_RUN_SECONDS", 0.05)  # a user's: 1 s per speed figure
    monkeypatch.setattr("finetune.training.lr_finder.STEPS", 30)  # a user's: 100 steps


@contextmanager
def per_test_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pytest.MonkeyPatch]:
    """The environment conftest gives every test (hermetic caches, short measurements), for a module-scoped fixture:
    it is made before any test's own, so it sets its own up, and undoes it before the tests run."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        hermetic(tmp_path_factory, monkeypatch)
        shorten_measurements(monkeypatch)
        yield monkeypatch


def run_summary(run_dir: Path) -> dict:
    """The ``summary.json`` of a run folder."""
    return json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))


def run_table(run_dir: Path, name: str) -> list[dict[str, str]]:
    """The rows of a CSV file of a run folder (``metrics.csv``, ``test_predictions.csv``)."""
    with (run_dir / name).open(encoding="utf-8") as file:
        return list(csv.DictReader(file))


def train_small_run(root: Path, arch: str = "small_cnn", image_size: int | None = None) -> Path:
    """A 3-step fp32 run of ``arch`` (small_cnn) on 3 classes × 8 photos (fp32: its figures are compared with
    ``zoo evaluate``'s, which bf16 on an AMX CPU would round apart); returns its run folder."""
    images = make_image_folder(root / "images")
    config = merge(RunConfig(), {
        "data": {"path": str(images), "batch_size": 8, "augment": "none", "num_workers": 0, "cache": "none",
                 "image_size": image_size},
        "model": {"arch": arch, "weights": "none"},
        "trainer": {"epochs": 1, "max_steps": 3, "seed": 0, "accelerator": "cpu", "precision": "32"},
        "out": str(root / "run"),
    })
    return train(config).run_dir


class _CreatesFile:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch '{self.marker}'",)


def write_malicious_pickle(path: Path, marker: Path) -> Path:
    """A checkpoint-shaped pickle whose loading with plain ``pickle`` would create ``marker``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as file:
        # Protocol 2 is torch.save's: the refusal must come from the code reference, not an unknown opcode.
        pickle.dump({"state_dict": _CreatesFile(marker), "zoo": {}}, file, protocol=2)
    return path


PHOTOS = ("chelsea", "coffee", "astronaut")


def make_image_folder(root: Path, per_class: int = 8, size: int = 40, classes: tuple[str, ...] = PHOTOS) -> Path:
    """One class per scikit-image photo; each image a different random crop of it (a learnable task)."""
    from skimage import data

    rng = np.random.default_rng(0)
    for name in classes:
        photo = getattr(data, name if name in PHOTOS else PHOTOS[hash(name) % len(PHOTOS)])()
        folder = root / name
        folder.mkdir(parents=True)
        height, width = photo.shape[:2]
        for index in range(per_class):
            top, left = rng.integers(0, height // 2), rng.integers(0, width // 2)
            crop = photo[top : top + height // 2, left : left + width // 2]
            Image.fromarray(crop).resize((size, size)).save(folder / f"{index}.jpg")
    return root


def publish_under_own_digest(monkeypatch: pytest.MonkeyPatch, arch: str, file: Path) -> str:
    """Make torchvision's ``arch`` IMAGENET1K_V1 weights published under ``file``'s own SHA-256 prefix, and return
    that file name (``resnet18-<8 hex digits>.pth``).

    No real weight file can be had here, and none can be forged: a file whose SHA-256 starts with torchvision's
    8 published hex digits would take ~2^32 tries. So only the published URL changes, in zoo's copy of torchvision's
    metadata (all zoo reads); verifying, installing and loading the file offline are the real paths.
    """
    from zoo import metadata

    name = f"{arch}-{hashlib.sha256(file.read_bytes()).hexdigest()[:8]}.pth"
    stored = metadata.torchvision_weights

    def published(model_name: str) -> dict[str, Any] | None:
        entry = stored(model_name)
        if model_name != arch or entry is None:
            return entry
        tags = [{**tag, "url": tag["url"].rsplit("/", 1)[0] + "/" + name} if tag["tag"] == "IMAGENET1K_V1" else tag
                for tag in entry["tags"]]
        return {**entry, "tags": tags}

    monkeypatch.setattr(metadata, "torchvision_weights", published)
    return name


@dataclass(frozen=True)
class CommandRun:
    """What a ``zoo`` command wrote to its folder and printed."""

    out: Path
    printed: str
    warned: str


def run_command(argv: list[str], out: Path) -> CommandRun:
    """``zoo ARGV`` in this process (expected to succeed), with what it printed; stdout is not a terminal."""
    from zoo_cli.main import main

    printed, warned = io.StringIO(), io.StringIO()
    with redirect_stdout(printed), redirect_stderr(warned):
        status = main(argv)
    assert status == 0, warned.getvalue()[-2000:]
    return CommandRun(out, printed.getvalue(), warned.getvalue())

