"""How a run's checkpoints reach the disk: atomically beside their destination, ``last.ckpt`` at the end of an
epoch at most every ``trainer.checkpoint_interval`` seconds and on Ctrl-C or SIGTERM, so a kill loses at most that
interval or the epoch in progress."""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import Checkpoint, ModelCheckpoint
from pytorch_lightning.utilities.exceptions import SIGTERMException
from torch import Tensor

from finetune.runtime.console import say
from zoo._io import save_atomic

LAST_CHECKPOINT = "last.ckpt"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch.save, written through ``zoo._io.save_atomic``.

    Lightning's own atomic save stages the file in ``$TMPDIR`` and moves it: across filesystems that is a
    copy, which a full disk cuts short. Here the file is staged beside its destination, flushed, then
    renamed; a failure is one line naming the folder, and the previous checkpoint survives.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        save_atomic(checkpoint, Path(path))


# --monitor: the metric that chooses best.ckpt; val_error's ties go to the lower validation loss.
MONITORED = {"val_error": "val/top1_error", "val_loss": "val/loss"}


class BestCheckpoint(ModelCheckpoint):
    """``best.ckpt``: the checkpoint of the lowest validation top-1 error so far, of equal errors the one of lower
    validation loss (``monitor="val_error"``); or of the lowest validation loss (``"val_loss"``).

    Selecting on the error alone kept the first of tied epochs, however much the loss fell after it (Keras and
    fastai monitor the loss). A run folder that was moved or copied (to another disk, another machine) resumes
    knowing its best score; Lightning's ``ModelCheckpoint`` forgets it when the folder's path changed, and would
    then replace ``best.ckpt`` with the next epoch's, however worse.
    """

    def __init__(self, run_dir: Path, monitor: str = "val_error") -> None:
        super().__init__(dirpath=run_dir, filename="best", monitor=MONITORED[monitor], mode="min",
                         auto_insert_metric_name=False, enable_version_counter=False)
        self.breaks_ties = monitor == "val_error"
        self.best_loss: float | None = None  # the validation loss of best.ckpt's epoch

    def better(self, error: float, loss: float | None) -> bool:
        """Whether figures of ``error`` (the monitored value) and validation ``loss`` beat best.ckpt's."""
        best = self.best_model_score
        if best is None or not self.best_k_models:  # the first validation is always saved, as in ModelCheckpoint
            return True
        if error != float(best) or not self.breaks_ties:
            return error < float(best)
        return loss is not None and (self.best_loss is None or loss < self.best_loss)

    def check_monitor_top_k(self, trainer: pl.Trainer, current: Tensor | None = None) -> bool:
        if current is None:
            return False
        loss = trainer.callback_metrics.get("val/loss")
        loss_value = float(loss) if loss is not None else None
        # Every process must agree, as in ModelCheckpoint.
        better = trainer.strategy.reduce_boolean_decision(self.better(float(current), loss_value))
        if better:
            self.best_loss = loss_value
        return better

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "best_loss": self.best_loss}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        def here(path: str) -> str:
            return str(Path(str(self.dirpath)) / Path(path).name) if path else path

        self.best_loss = state_dict.get("best_loss")
        moved = {**state_dict, "dirpath": self.dirpath,
                 "best_k_models": {here(path): score for path, score in state_dict.get("best_k_models", {}).items()}}
        moved.pop("best_loss", None)
        for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
            moved[key] = here(state_dict.get(key, ""))
        super().load_state_dict(moved)


# The command that continues the runs in progress, when a command other than zoo finetune runs them (zoo compare
# continues all of its runs, the interrupted one first): set with continue_with.
_CONTINUE_WITH: ContextVar[str | None] = ContextVar("continue_with", default=None)


@contextmanager
def continue_with(command: str) -> Iterator[None]:
    """Within the block, an interrupted run says ``command`` continues it (instead of ``zoo finetune --resume``)."""
    token = _CONTINUE_WITH.set(command)
    try:
        yield
    finally:
        _CONTINUE_WITH.reset(token)


def resume_command(run_dir: Path) -> str:
    return _CONTINUE_WITH.get() or f"zoo finetune --resume {shlex.quote(str(run_dir))}"


class LastCheckpoint(Checkpoint):
    """Write ``last.ckpt`` at the end of an epoch (after ``metrics.csv`` got its row) when waiting for the next
    epoch's end would leave more than ``interval`` seconds unsaved (so after every epoch that takes that long),
    after the run's last epoch, and when the run is interrupted by Ctrl-C or SIGTERM, then say how to continue.

    Two checkpoints of 16.6 MB written and flushed after every 3-s epoch took 9% of a run: short epochs share one
    write per interval. Lightning's ``ModelCheckpoint(save_last=True)`` refreshes it only when the monitored error
    improves.
    """

    def __init__(self, run_dir: Path, interval: float) -> None:
        self.run_dir = run_dir
        self.interval = interval
        self._saved = 0.0  # time.monotonic() of the last write, or of the start of training
        self._epoch_started = 0.0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._saved = time.monotonic()
        every = (f"every {self.interval:g} s (every epoch when epochs take longer)" if self.interval
                 else "after every epoch")
        lost = f"{self.interval:g} s or one epoch" if self.interval else "one epoch"
        say(f"{LAST_CHECKPOINT}: written at the end of an epoch {every}, after the last epoch and on Ctrl-C or "
            f"SIGTERM; a kill -9 loses at most {lost} (--checkpoint-interval)")

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_started = time.monotonic()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # After validation, and after BestCheckpoint (listed before this one), which saves here too: the file
        # holds the epoch's metrics rows and its best score.
        now = time.monotonic()
        # Skipped only if the next epoch, as long as this one, would still end within the interval.
        due = now + (now - self._epoch_started) - self._saved > self.interval or _last_epoch(trainer)
        # Every process must agree: saving waits for all of them, and their clocks differ.
        if trainer.strategy.broadcast(due, src=0):
            trainer.save_checkpoint(self.run_dir / LAST_CHECKPOINT)
            self._saved = time.monotonic()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, (KeyboardInterrupt, SIGTERMException)):
            return
        trainer.save_checkpoint(self.run_dir / LAST_CHECKPOINT)
        if trainer.is_global_zero:
            what = "interrupted" if isinstance(exception, KeyboardInterrupt) else "stopped by SIGTERM"
            print(f"\n{what}: saved {self.run_dir / LAST_CHECKPOINT} (epoch {trainer.current_epoch + 1}, step "
                  f"{trainer.global_step}); continue with: {resume_command(self.run_dir)}", file=sys.stderr, flush=True)


def _last_epoch(trainer: pl.Trainer) -> bool:
    """Whether training ends after this epoch: its last epoch or step, or a stop (as Lightning's ``fit_loop.done``
    decides, without its messages)."""
    max_epochs = trainer.max_epochs if trainer.max_epochs is not None else -1
    # trainer.current_epoch counts the epochs completed, this one not yet.
    return (trainer.should_stop or 0 <= trainer.max_steps <= trainer.global_step
            or 0 <= max_epochs <= trainer.current_epoch + 1)
