"""Helpers for the tests of runs, evaluate, predict and export: a short real run, its files, a malicious pickle."""

from __future__ import annotations

import csv
import json
import os
import pickle
from pathlib import Path

from finetune.config import RunConfig, merge
from finetune.run import train
from tests.conftest import make_image_folder


def run_summary(run_dir: Path) -> dict:
    """The ``summary.json`` of a run folder."""
    return json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))


def run_table(run_dir: Path, name: str) -> list[dict[str, str]]:
    """The rows of a CSV file of a run folder (``metrics.csv``, ``test_predictions.csv``)."""
    with (run_dir / name).open(encoding="utf-8") as file:
        return list(csv.DictReader(file))


def train_small_run(root: Path) -> Path:
    """A 3-step small_cnn run on 3 classes × 8 photos; returns its run folder."""
    images = make_image_folder(root / "images")
    config = merge(RunConfig(), {
        "data": {"path": str(images), "batch_size": 8, "augment": "none", "num_workers": 0, "cache": "none"},
        "model": {"arch": "small_cnn", "weights": "none"},
        "trainer": {"epochs": 1, "max_steps": 3, "seed": 0, "accelerator": "cpu"},
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
