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

_LEFT_OUT = pytest.StashKey[int]()  # how many slow tests this session left out


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true",
                     help="also run the tests marked slow (CI does; python -m pytest alone leaves them out)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave out the slow tests unless --run-slow (or a -m expression that chooses them) asks for them."""
    if config.getoption("--run-slow") or config.getoption("markexpr"):
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("slow")]
        config.stash[_LEFT_OUT] = len(slow)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    left_out = config.stash.get(_LEFT_OUT, 0)
    if left_out:
        terminalreporter.write_line(f"{left_out} slow tests left out: python -m pytest --run-slow runs them too")
