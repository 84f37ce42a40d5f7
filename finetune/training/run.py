"""``train(config)``: from a folder of images to a trained, measured classifier in a run folder.

The steps each live in their own module: the split (``data_split``), the process's role in a DDP run (``roles``),
the run folder and resume (``run_folder``), the settings and network (``setup``), the trainer (``trainer``) and what
the run hands over (``run_summary``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl

from finetune.config import CONFIG_FILE, RunConfig, merge, save_config
from finetune.data.shards import is_shards
from finetune.data.split import Split, has_split, load_split, save_split
from finetune.results.records import RunSummary
from finetune.runtime.console import lightning_quieted, say
from finetune.runtime.hardware import run_arithmetic
from finetune.runtime.processes import check_devices
from finetune.runtime.progress import PhaseTimes
from finetune.training.data_split import make_split
from finetune.training.learning_rate import resolve_lr
from finetune.training.prepared import Prepared
from finetune.training.roles import (
    Role,
    first_process_precision,
    hand_over,
    launch_marks,
    process_role,
    starting_settings,
)
from finetune.training.run_folder import new_run_dir, restart_schedule
from finetune.training.run_lock import lock_run_folder, release_run_folders
from finetune.training.run_summary import not_learned_message, summarize
from finetune.training.saving import LAST_CHECKPOINT
from finetune.training.setup import Setup, choose_settings, prepare
from finetune.training.trainer import build_trainer, fit, validate_final_step


@dataclass(frozen=True)
class RunResult:
    """Where the run lives and what it measured (``summary.json``; None in the other processes of a DDP run)."""

    run_dir: Path
    summary: RunSummary | None


def train(config: RunConfig, *, resume: Path | None = None, split: Split | None = None,
          watchers: Sequence[pl.Callback] = (), started: float | None = None) -> RunResult:
    """Fine-tune ``config.model.arch`` on ``config.data.path``; everything lands in the run folder.

    ``split`` reuses a split made elsewhere (``zoo compare`` shares one); by default one is made from
    the data folder, or read back from the run folder when resuming. The data and the weights are
    checked before the run folder is created, so a failed start leaves nothing behind. ``watchers`` are
    extra callbacks that observe the run (the benchmarks time its steps with one).

    ``started`` is the ``time.perf_counter()`` reading at which the user's wait began (``zoo finetune`` passes its
    process's start, so the imports count as the ``startup`` phase); by default, the call. ``wall_seconds`` counts
    from there, and ``phase_seconds`` splits it into phases that do not overlap.
    """
    entered = time.perf_counter()
    times = PhaseTimes()
    if started is not None and started < entered:
        times.add("startup", entered - started)
    with lightning_quieted(), launch_marks(), run_arithmetic(), _releasing_run_folders():
        with times.phase("setup"):  # less its scan, precision probe, decoding and lr finding, timed on their own
            run = _prepare(config, resume, split, times)
            trainer, watched = build_trainer(run, watchers)
        with times.phase("train"):  # the epochs with their validation, less any decoding or feature extraction
            fit(trainer, run)
            validate_final_step(trainer, run.setup, watched)
        if not trainer.is_global_zero:
            return RunResult(run.run_dir, None)
        summary = summarize(trainer, run, watched, entered if started is None else started)
    if not summary.learned:
        say(not_learned_message(summary), warning=True)
    return RunResult(run.run_dir, summary)


@contextmanager
def _releasing_run_folders() -> Iterator[None]:
    try:
        yield
    finally:
        release_run_folders()


def _prepare(config: RunConfig, resume: Path | None, split: Split | None, times: PhaseTimes) -> Prepared:
    """Split, resolve the settings, build the network and data, then make or reopen the run folder and write
    its config and split (the other processes of a DDP run read them instead)."""
    role = process_role(resume)
    config = merge(config, {})  # a config built in Python is checked like a file: types, bounds, conflicts
    config, resume = starting_settings(role, config, resume)
    first = role is Role.FIRST
    restart = resume is not None and not (resume / LAST_CHECKPOINT).is_file()
    if restart and first:
        say(f"{resume} has no checkpoint yet (it stopped before its first epoch ended): starting it again from "
            "epoch 1 with its saved settings")
    if resume is not None and has_split(resume) and not is_shards(config.data.path):
        split = load_split(resume)
    elif split is None:
        with times.phase("scan"):
            split = make_split(config)
    config = choose_settings(config, split)
    check_devices(config)
    if not first and resume is not None:
        config = first_process_precision(config, resume)
    setup = prepare(config, split, times)
    run_dir = resume if resume is not None else new_run_dir(config)
    lock_run_folder(run_dir)  # a resume through the API, without resume_config
    if first:
        _write_settings(config, split, setup, run_dir)
    if config.optim.lr == "auto":
        with times.phase("lr_find"):
            config = resolve_lr(config, setup, run_dir)
        if first:
            save_config(config, run_dir / CONFIG_FILE)  # the resolved learning rate, not "auto"
    checkpoint = None if resume is None or restart else resume / LAST_CHECKPOINT
    restarted = checkpoint is not None and restart_schedule(checkpoint, config, setup, worker=not first)
    return Prepared(config, split, setup, run_dir, checkpoint, times, restarted)


def _write_settings(config: RunConfig, split: Split, setup: Setup, run_dir: Path) -> None:
    """The first process's settings in the run folder, for the other processes and the next resume."""
    hand_over(run_dir, setup.precision.value)
    # First, so a run killed from here on can be resumed; on resume, the new epochs or devices, for the
    # processes of a DDP launch and the next resume.
    save_config(config, run_dir / CONFIG_FILE)
    if not has_split(run_dir):
        save_split(split, run_dir)
        if split.skipped:
            say(f"skipped {len(split.skipped)} unreadable files (listed with reasons in "
                f"{run_dir / 'skipped.csv'})", warning=True)
