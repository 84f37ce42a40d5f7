"""Run callbacks: per-epoch metrics, training throughput, a stop on divergence, and the run's live output:
a light progress bar in a terminal, one line per epoch elsewhere (log files, CI, cluster jobs)."""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback, EarlyStopping, TQDMProgressBar

from finetune.runtime.progress import ProgressLines, clock
from zoo._io import write_atomic
from zoo.errors import ZooError


class DivergedError(ZooError):
    """A run whose loss is no longer a finite number."""

METRICS = ("train/loss", "val/loss", "val/top1_error", "val/topk_error")


class EpochMetrics(Callback):
    """Append one row per validated epoch to ``metrics.csv`` and keep the rows for the summary.

    The rows travel in every checkpoint, and at the start of a run the file is rewritten to hold exactly
    the checkpoint's rows: a resumed run continues the file without repeating the epochs it redoes.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: list[dict[str, float | None]] = []
        self.validated_step: int | None = None  # known on every process, unlike the rows (rank 0 only)

    def state_dict(self) -> dict[str, list[dict[str, float | None]]]:
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict[str, list[dict[str, float | None]]]) -> None:
        self.rows = list(state_dict["rows"])
        # A resumed run that had finished its epochs was validated at its last step: no second validation.
        last_step = self.rows[-1]["step"] if self.rows else None
        self.validated_step = int(last_step) if last_step is not None else None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        fields = list(self.rows[0]) if self.rows else []

        def write(temporary: Path) -> None:
            with temporary.open("w", newline="", encoding="utf-8") as file:
                writer = csv.DictWriter(file, fieldnames=fields)
                writer.writeheader()
                writer.writerows(self.rows)

        if self.rows:
            write_atomic(self.path, write)
        else:
            self.path.unlink(missing_ok=True)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self.validated_step = trainer.global_step
        if not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        # Epochs count from 1 here as in the progress bar, the summary and the plots. After fit (the validation
        # of a run cut short mid-epoch by max_steps) Lightning has already counted that partial epoch.
        epoch = trainer.current_epoch + (1 if trainer.state.fn == "fit" else 0)
        row: dict[str, float | None] = {"epoch": epoch, "step": trainer.global_step}
        for key in METRICS:
            value = metrics.get(key)
            row[key] = round(float(value), 6) if value is not None else None
        row["lr"] = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else None
        self.rows.append(row)
        new = not self.path.exists()
        with self.path.open("a", newline="", encoding="utf-8") as file:
            writer = csv.DictWriter(file, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)


class Throughput(Callback):
    """Training seconds and images per second, data loading included, validation excluded."""

    def __init__(self) -> None:
        self.images = 0
        self.seconds = 0.0
        self._start: float | None = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.images += len(batch[1]) * trainer.world_size

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._pause()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.training:
            self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._pause()

    def _pause(self) -> None:
        if self._start is not None:
            self.seconds += time.perf_counter() - self._start
            self._start = None

    def state_dict(self) -> dict[str, float]:
        """Saved in checkpoints, so a resumed run reports its whole training time."""
        return {"images": self.images, "seconds": self.seconds}

    def load_state_dict(self, state_dict: dict[str, float]) -> None:
        self.images = int(state_dict["images"])
        self.seconds = float(state_dict["seconds"])

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0


class ProgressBar(TQDMProgressBar):
    """Lightning's progress bar, redrawn at most every ``interval`` seconds, showing the latest step's loss.

    Lightning redraws it after every step, and the loss it shows has to be logged every step: for
    small_cnn that cost about 4 ms of a 25 ms step (the bar alone, or the logging alone, half of it).
    """

    def __init__(self, interval: float = 0.2) -> None:
        super().__init__()
        self.interval = interval
        self._drawn = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, *_: object) -> None:
        super().on_train_epoch_start(trainer)
        # Lightning counts epochs from 0; zoo counts them from 1 everywhere.
        self.train_progress_bar.set_description(f"Epoch {trainer.current_epoch + 1}/{trainer.max_epochs}")

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        bar = self.train_progress_bar
        now = time.monotonic()
        if bar is None or bar.disable or (now - self._drawn < self.interval and batch_idx + 1 != bar.total):
            return
        self._drawn = now
        bar.n = batch_idx + 1
        bar.set_postfix({**self.get_metrics(trainer, pl_module), "loss": f"{float(outputs['loss']):.3f}"})


class StepLines(Callback):
    """Progress lines of the training steps (``ProgressLines``), for output that is not a terminal: an epoch, or the
    learning-rate finder, can run for minutes between the lines that end them."""

    def __init__(self, description: str) -> None:
        self.description = description
        self._lines: ProgressLines | None = None
        self._first_step = 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        total = trainer.estimated_stepping_batches
        self._first_step = trainer.global_step  # a resumed run counts its own steps
        self._lines = ProgressLines(self.description, int(total) - self._first_step if math.isfinite(total) else 0,
                                    "steps")

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._lines is not None and trainer.is_global_zero:
            self._lines.update(trainer.global_step - self._first_step)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._lines is not None:  # EpochLog's line: short epochs need no lines in between
            self._lines.deferred()


class EpochLog(Callback):
    """One line per validated epoch, for output that is not a terminal: no redraws fill the log.

    ``epoch 3/15  train loss 0.412  val top-1 error 2.60%  lr 1.2e-03  1250 img/s  elapsed 0:00:24  left ~0:01:36``
    """

    def __init__(self, metrics: EpochMetrics, throughput: Throughput) -> None:
        self.metrics = metrics
        self.throughput = throughput
        self._started: float | None = None
        self._first_epoch = 0

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started = time.perf_counter()
        self._first_epoch = trainer.current_epoch  # a resumed run estimates from its own epochs

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or not self.metrics.rows or self._started is None:
            return
        row = self.metrics.rows[-1]
        epoch, max_epochs = row["epoch"], trainer.max_epochs
        # Every row has its epoch, and Lightning resolves an unset max_epochs to a number.
        assert epoch is not None
        assert max_epochs is not None
        elapsed = time.perf_counter() - self._started
        done = max(1, int(epoch) - self._first_epoch)
        left = elapsed / done * max(0, max_epochs - int(epoch))
        parts = [f"epoch {int(epoch)}/{max_epochs}"]
        if row["train/loss"] is not None:
            parts.append(f"train loss {row['train/loss']:.4f}")
        parts += [f"val loss {row['val/loss']:.4f}", f"val top-1 error {row['val/top1_error']:.2f}%"]
        if row["lr"] is not None:
            parts.append(f"lr {row['lr']:.2e}")
        parts += [f"{self.throughput.images_per_second:.0f} img/s", f"elapsed {clock(elapsed)}",
                  f"left ~{clock(left)}"]
        print("  ".join(parts), flush=True)


class EarlyStop(EarlyStopping):
    """Stop when validation top-1 error has not fallen for ``patience`` epochs, judged from ``first_epoch`` on.

    ``first_epoch`` (Lightning's count, from 0) skips a frozen warm-up: the head alone plateaus early, and
    the epochs after unfreezing must get their own chance.
    """

    def __init__(self, patience: int, first_epoch: int = 0, fresh: bool = False) -> None:
        super().__init__(monitor="val/top1_error", mode="min", patience=patience, check_on_train_epoch_end=False)
        self.first_epoch = first_epoch
        self.fresh = fresh  # a warm restart of a run that stopped early: judged anew, not stopped again at once

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not self.fresh:
            super().load_state_dict(state_dict)

    def _run_early_stopping_check(self, trainer: pl.Trainer) -> None:
        if trainer.current_epoch >= self.first_epoch:
            super()._run_early_stopping_check(trainer)

    @property
    def stopped_at(self) -> int | None:
        """The epoch (from 1) after which the run stopped early; None when it ran its course."""
        return self.stopped_epoch + 1 if self.stopped_epoch else None


class FiniteLoss(Callback):
    """Stop a run whose training loss stops being a finite number: every later step would only spread NaN.

    Reading the loss waits for the device to finish the step: on a GPU that stall is paid only every
    ``every`` steps and at the end of an epoch (a NaN spreads, so it is still there then); on the CPU, where
    reading it costs nothing, every step.
    """

    # 50: the stall (the device idles while the next step is queued) is paid on 2% of the steps, and a diverged
    # run still stops within 50 steps, seconds after its loss became NaN.
    def __init__(self, every: int = 50) -> None:
        self.every = every

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = outputs["loss"]
        last = batch_idx + 1 == trainer.num_training_batches
        if loss.device.type != "cpu" and (trainer.global_step % self.every and not last):
            return
        value = float(loss)
        if not math.isfinite(value):
            raise DivergedError(
                f"the training loss became {value} at epoch {trainer.current_epoch + 1}, step {trainer.global_step}: "
                "the run diverged; start again with a lower --lr (or --lr auto)"
            )
