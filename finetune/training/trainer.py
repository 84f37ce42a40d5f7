"""The Lightning Trainer of a run: its callbacks (checkpoints, metrics, progress, freezing, stopping, averaging),
``fit`` with what stops it said in one line and the exit status a shell gives the signal, and a last validation
for a run cut short mid-epoch."""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.utilities.exceptions import SIGTERMException

from finetune.config import ConfigError
from finetune.data.images import UnreadableImageError
from finetune.runtime.processes import devices_setting
from finetune.training.averaging import WeightEma
from finetune.training.callbacks import (
    EarlyStop,
    EpochLog,
    EpochMetrics,
    FiniteLoss,
    ProgressBar,
    StepLines,
    Throughput,
)
from finetune.training.freezing import BackboneFreeze
from finetune.training.loggers import make_logger
from finetune.training.plateau import PlateauStop
from finetune.training.prepared import Prepared
from finetune.training.saving import LAST_CHECKPOINT, AtomicCheckpointIO, BestCheckpoint, LastCheckpoint, resume_command
from finetune.training.setup import Setup, trainer_settings
from zoo._io import DiskError
from zoo.errors import describe_error


@dataclass
class Watchers:
    """The callbacks whose state the summary reads."""

    metrics: EpochMetrics
    throughput: Throughput
    best: BestCheckpoint
    early_stop: EarlyStop | None


def build_trainer(run: Prepared, extra: Sequence[pl.Callback]) -> tuple[pl.Trainer, Watchers]:
    config, run_dir = run.config, run.run_dir
    metrics = EpochMetrics(run_dir / "metrics.csv")
    throughput = Throughput()
    best = BestCheckpoint(run_dir, config.trainer.monitor)
    # A terminal gets the live bar; a log file one line per epoch instead of every redraw, and a progress line
    # at most every few seconds within a long epoch.
    progress = [ProgressBar()] if sys.stdout.isatty() else [EpochLog(metrics, throughput), StepLines("training")]
    # BestCheckpoint before LastCheckpoint: last.ckpt must hold the best score of its own epoch.
    last = LastCheckpoint(run_dir, config.trainer.checkpoint_interval)
    callbacks: list[pl.Callback] = [best, metrics, throughput, last, FiniteLoss(), *progress, *extra]
    unfreeze_epoch = config.optim.unfreeze_epoch if config.optim.freeze == "until-epoch" else 0
    if config.optim.freeze != "none":
        callbacks.append(BackboneFreeze(unfreeze_epoch or None))
    if config.optim.schedule == "plateau" and not run.restarted:  # a warm restart runs its own epochs out
        callbacks.append(PlateauStop())
    if isinstance(config.optim.ema, float):
        callbacks.append(WeightEma(config.optim.ema))
    early_stop = (EarlyStop(config.trainer.patience, unfreeze_epoch, fresh=run.restarted) if config.trainer.patience
                  else None)
    if early_stop is not None:
        callbacks.append(early_stop)
    trainer = pl.Trainer(
        **{**trainer_settings(config, run.setup.precision.value, run_dir),
           "logger": make_logger(config.trainer.logger, run_dir)},
        max_epochs=config.trainer.epochs,
        max_steps=config.trainer.max_steps,
        devices=devices_setting(config.trainer.devices),
        num_nodes=config.trainer.num_nodes,
        strategy=config.trainer.strategy,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        num_sanity_val_steps=0,
        log_every_n_steps=10,
    )
    return trainer, Watchers(metrics, throughput, best, early_stop)


def fit(trainer: pl.Trainer, run: Prepared) -> None:
    """``trainer.fit``, with what stops it said in one line (and the exit status a shell gives the signal)."""
    try:
        # weights_only pinned explicitly: TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD in the environment cannot unpin it.
        trainer.fit(run.setup.module, datamodule=run.setup.data, ckpt_path=run.checkpoint, weights_only=True)
    # LastCheckpoint saved last.ckpt and printed the resume command; the statuses are a shell's for the signal
    # (Lightning's own: 0 after SIGTERM, which would look like success, and 1 after Ctrl-C).
    except SIGTERMException:
        raise SystemExit(128 + signal.SIGTERM) from None
    except SystemExit:
        if trainer.interrupted:
            raise SystemExit(128 + signal.SIGINT) from None
        raise
    except RuntimeError as error:  # a last.ckpt of the same architecture and classes whose tensors do not fit
        if run.checkpoint is None or "state_dict" not in str(error):
            raise
        raise ConfigError(f"{run.checkpoint} does not fit this run's network ({describe_error(error)}): put back "
                          "the run's own last.ckpt, or delete it to start the run again from epoch 1 with --resume"
                          ) from error
    except (DiskError, UnreadableImageError) as error:
        raise type(error)(f"{error}; then continue with: {resume_command(run.run_dir)}") from error


def validate_final_step(trainer: pl.Trainer, setup: Setup, watched: Watchers) -> None:
    """A run cut short by ``max_steps`` mid-epoch is still measured and checkpointed at its last step."""
    if watched.metrics.validated_step == trainer.global_step:  # the same answer on every process of a DDP run
        return
    trainer.validate(setup.module, datamodule=setup.data, verbose=False)
    metrics = trainer.callback_metrics
    monitored, loss = metrics.get(str(watched.best.monitor)), metrics.get("val/loss")
    run_dir = Path(str(watched.best.dirpath))
    if monitored is not None and watched.best.better(float(monitored), float(loss) if loss is not None else None):
        trainer.save_checkpoint(run_dir / "best.ckpt")
    trainer.save_checkpoint(run_dir / LAST_CHECKPOINT)
