"""Shared fixtures: tiny real image folders and hermetic caches (zoo, torch home, Hugging Face hub)."""

from __future__ import annotations

import os
from pathlib import Path

# Tables are laid out for COLUMNS when it is set (pytest-xdist's workers get 80, a terminal its own width): the
# tests see piped output of whole rows unless they set it themselves.
os.environ.pop("COLUMNS", None)
if "PYTEST_XDIST_WORKER" in os.environ:
    # Each of pytest-xdist's workers (one per core) gets one torch thread, and so do the processes it starts:
    # two threads per worker on shared cores made every step wait for a core.
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest

from tests.helpers import CommandRun, hermetic, make_image_folder, run_command, shorten_measurements, train_small_run


@pytest.fixture(autouse=True)
def hermetic_environment(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads or writes the user's caches; weights are never downloaded."""
    hermetic(tmp_path_factory, monkeypatch)


@pytest.fixture(autouse=True)
def short_measurements(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shorter timings and range tests than a user's: the tests check what they produce, not their figures."""
    shorten_measurements(monkeypatch)


@pytest.fixture(scope="session")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One short small_cnn run (``train_small_run``) for every test that only reads it: training it once per
    session instead of once per module. A test writes what it makes outside it, or in a new sub-folder."""
    with pytest.MonkeyPatch.context() as monkeypatch:  # made before any test's own environment
        hermetic(tmp_path_factory, monkeypatch)
        return train_small_run(tmp_path_factory.mktemp("small-run"))


@pytest.fixture(scope="session")
def cli_run(tmp_path_factory: pytest.TempPathFactory) -> CommandRun:
    """``zoo finetune`` of small_cnn for 2 epochs on 3 classes × 8 photos, through the command line, once per
    session for the tests that read its folder and output."""
    root = tmp_path_factory.mktemp("cli-run")
    with pytest.MonkeyPatch.context() as monkeypatch:
        hermetic(tmp_path_factory, monkeypatch)
        images = make_image_folder(root / "images")
        return run_command(["finetune", "--arch", "small_cnn", "--data", str(images), "--epochs", "2", "--out",
                            str(root / "run"), "--batch-size", "8", "--augment", "none", "--seed", "0"], root / "run")


@pytest.fixture(scope="session")
def small_bundle(small_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``small_run`` exported as a safetensors bundle, once per session, for tests that only read it (a test that
    damages a bundle copies it first)."""
    from finetune.shipping.export import export

    return export(small_run, ["safetensors"], tmp_path_factory.mktemp("small-bundle") / "bundle").out_dir


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
