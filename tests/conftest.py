"""Shared fixtures: tiny real image folders and a hermetic cache and torch home."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

PHOTOS = ("chelsea", "coffee", "astronaut")


@pytest.fixture(autouse=True)
def hermetic_environment(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads or writes the user's caches; weights are never downloaded."""
    cache = tmp_path_factory.getbasetemp() / "zoo-cache"
    monkeypatch.setenv("ZOO_CACHE", str(cache))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.getbasetemp() / "torch-home"))
    monkeypatch.setenv("ZOO_OFFLINE", "1")


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


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "images")
