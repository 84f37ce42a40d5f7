"""A run ready to train, as ``train`` hands it from its preparation to the trainer and the summary."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from finetune.config import RunConfig
from finetune.data.split import Split
from finetune.runtime.progress import PhaseTimes
from finetune.training.setup import Setup


@dataclass
class Prepared:
    """A run ready to train: its resolved settings, split, network and data, and its folder with its files."""

    config: RunConfig
    split: Split
    setup: Setup
    run_dir: Path
    checkpoint: Path | None  # last.ckpt to continue from; None for a fresh start
    times: PhaseTimes
    restarted: bool = False  # more epochs on an ended run: a new schedule, and early stopping judged afresh
