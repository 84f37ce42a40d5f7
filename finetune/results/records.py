"""What a finished run wrote down: ``summary.json`` as a typed record, written and read back strictly.

One name per figure: ``<split>_top1_error`` with its ``_ci95`` interval, ``<split>_topk_error`` with ``k``.
A file read back must hold exactly these fields, each of its type: a damaged file, or one from another
version of zoo, is one line naming the field, never a KeyError deep in a report.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from finetune.config import RunConfig
from zoo._io import write_text_atomic
from zoo.errors import ZooError, describe_error
from zoo.schema import Record, check

SUMMARY_FILE = "summary.json"
Split = Literal["test", "val"]


class ErrorFigures(Record):
    """A model's errors on one split's images (percent), as evaluate, the held-out test and zoo.json give them."""

    num_images: int
    top1_error: float
    top1_error_ci95: list[float]  # its 95% Wilson interval
    k: int | None  # top-k's k: min(5, classes - 1); None for 2 classes
    topk_error: float | None
    loss: float | None


class RunSummary(Record):
    """A finished run: its data, how it trained, the best checkpoint's figures and the settings behind them."""

    arch: str
    weights: str  # "none", "<arch>:<tag>" or the weights file
    num_classes: int
    classes: list[str]
    num_train: int
    num_val: int
    num_test: int
    num_skipped: int
    image_size: int
    epochs: int  # epochs begun, a last one cut short by max_steps included
    stopped_early_after_epoch: int | None
    steps: int
    precision: str
    memory_format: str
    selected_on: Literal["val"]  # the split that chose the checkpoint
    # What chose it: monitor (val_error or val_loss), tie_break, the epoch and its val_top1_error and val_loss,
    # epochs_tied (epochs of that validation error) and lowest_val_loss_of_tied.
    selection: dict[str, int | float | str | None]
    # The best epoch's row of metrics.csv (the checkpoint's), and the last epoch's.
    best_epoch: int | None
    val_top1_error: float | None
    val_topk_error: float | None
    val_loss: float | None
    final_val_top1_error: float | None
    final_val_topk_error: float | None
    val_top1_error_ci95: list[float]
    k: int | None  # top-k's k: min(5, classes - 1); None for 2 classes
    # The best checkpoint measured once on the test split (all None without one).
    test_top1_error: float | None
    test_top1_error_ci95: list[float] | None
    test_topk_error: float | None
    test_loss: float | None
    tta: Literal["none", "flip", "flip-crop"]  # test-time augmentation of the test figures (never of the choice)
    reported_on: Split  # the split of the headline error: test when there is one
    chance_top1_error: float  # always the most frequent class, on that split
    learned: bool  # the headline interval lies below chance
    temperature: float  # softmax temperature fitted on validation
    val_ece_before: float | None
    val_ece_after: float | None
    val_ece_noise: float | None  # the ECE a perfectly calibrated model with the calibrated softmax shows on num_val
    val_nll_before: float | None
    val_nll_after: float | None
    train_seconds: float
    phase_seconds: dict[str, float]  # startup, scan, setup, precision, decode, features, lr_find, train, ... : the wall
    wall_seconds: float
    train_images_per_second: float
    best_checkpoint: str
    last_checkpoint: str
    seed: int
    config: RunConfig  # checked by the schema layer like a config file (docs/options.md lists the settings)

    def error(self, split: Split) -> float | None:
        """The top-1 error on ``split``."""
        return self.test_top1_error if split == "test" else self.val_top1_error

    def interval(self, split: Split) -> list[float] | None:
        """The 95% Wilson interval of ``error(split)``."""
        return self.test_top1_error_ci95 if split == "test" else self.val_top1_error_ci95

    def topk(self, split: Split) -> float | None:
        """The top-``k`` error on ``split``."""
        return self.test_topk_error if split == "test" else self.val_topk_error

    def loss(self, split: Split) -> float | None:
        return self.test_loss if split == "test" else self.val_loss

    def num_images(self, split: Split) -> int:
        return self.num_test if split == "test" else self.num_val

    def figures(self, split: Split) -> ErrorFigures | None:
        """The figures of ``split``; None when it was not measured."""
        error, interval = self.error(split), self.interval(split)
        if error is None or interval is None:
            return None
        return ErrorFigures(num_images=self.num_images(split), top1_error=error, top1_error_ci95=interval, k=self.k,
                            topk_error=self.topk(split), loss=self.loss(split))

    def write(self, run_dir: Path) -> None:
        """``summary.json`` in ``run_dir``, atomically: a run folder with one has finished."""
        write_text_atomic(run_dir / SUMMARY_FILE, json.dumps(self.to_dict(), indent=2, ensure_ascii=False))

    @classmethod
    def read(cls, run_dir: Path) -> RunSummary:
        """The ``summary.json`` of ``run_dir``; a missing, damaged or foreign file is one line naming the fix."""
        path = Path(run_dir) / SUMMARY_FILE
        if not path.is_file():
            comparison = (run_dir / "runs").is_dir()
            hint = f": for a comparison folder pass its run folders, {run_dir}/runs/*" if comparison else ""
            raise ZooError(f"{run_dir} holds no finished run (no {SUMMARY_FILE}){hint}")
        fix = f"train the run again, or leave {run_dir} out"
        try:
            content = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as error:  # a cut-off file, another encoding, JSON nested too deep
            raise ZooError(f"cannot read {path}: {describe_error(error)}; {fix}") from error
        return check(cls, content, str(path), fix)
