"""What a finished run wrote down: ``summary.json`` as a typed record, written and read back strictly.

One name per figure: ``<split>_top1_error`` with its ``_ci95`` interval, ``<split>_topk_error`` with ``k``.
A file read back must hold exactly these fields, each of its type: a damaged file, or one from another
version of zoo, is one line naming the field, never a KeyError deep in a report.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from finetune.config import ConfigError, RunConfig, merge, to_dict
from zoo._io import write_text_atomic
from zoo.errors import ZooError, describe_error, short_repr

SUMMARY_FILE = "summary.json"
Split = Literal["test", "val"]


@dataclass(frozen=True)
class RunSummary:
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
    selection: dict[str, float | str | None]
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
    val_nll_before: float | None
    val_nll_after: float | None
    train_seconds: float
    phase_seconds: dict[str, float]  # startup, scan, setup, precision, decode, features, lr_find, train, ... : the wall
    wall_seconds: float
    train_images_per_second: float
    best_checkpoint: str
    last_checkpoint: str
    seed: int
    config: RunConfig

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

    def to_dict(self) -> dict[str, Any]:
        return {**{field.name: getattr(self, field.name) for field in dataclasses.fields(self)},
                "config": to_dict(self.config)}

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
        if not isinstance(content, dict):
            raise ZooError(f"{path} holds a JSON {type(content).__name__}, not the summary of a run: {fix}")
        hints = _hints()
        missing = [name for name in hints if name not in content]
        unknown = [str(name) for name in content if name not in hints]
        if missing or unknown:
            what = f"lacks {', '.join(missing[:3])}" if missing else f"has unknown fields {', '.join(unknown[:3])}"
            raise ZooError(f"{path} {what} (written by another version of zoo?): {fix}")
        for name, annotation in hints.items():
            if name != "config" and not _fits(content[name], annotation):
                got = short_repr(content[name])
                raise ZooError(f"{path}: {name} must be {_describe(annotation)}, got {got}: {fix}")
        try:
            config = merge(RunConfig(), content["config"]) if isinstance(content["config"], dict) else None
        except ConfigError as error:
            raise ZooError(f"{path}: its config: {error}: {fix}") from error
        if config is None:
            raise ZooError(f"{path}: config must be a mapping of settings, got {short_repr(content['config'])}: {fix}")
        return cls(**{**content, "config": config})


@functools.cache
def _hints() -> dict[str, Any]:
    return typing.get_type_hints(RunSummary)


def _fits(value: Any, annotation: Any) -> bool:
    """Whether a JSON ``value`` is of ``annotation`` (the types a summary uses)."""
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, option) for option in arguments)
    if origin is Literal:
        return value in arguments
    if origin is list:
        return isinstance(value, list) and all(_fits(item, arguments[0]) for item in value)
    if origin is dict:
        return isinstance(value, dict) and all(_fits(item, arguments[1]) for item in value.values())
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, annotation)


def _describe(annotation: Any) -> str:
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(option) for option in arguments)
    if origin is Literal:
        return " or ".join(map(str, arguments))
    if origin is list:
        return f"a list of {_describe(arguments[0])}"
    if origin is dict:
        return f"a mapping to {_describe(arguments[1])}"
    names = {type(None): "null", float: "a number", int: "a whole number", str: "text", bool: "true or false"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))
