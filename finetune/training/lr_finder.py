"""``--lr auto``: Lightning's learning-rate range test, on the training split only.

The test trains for ``STEPS`` batches while the learning rate grows exponentially from ``LR_RANGE[0]``
to ``LR_RANGE[1]``, then restores the network; the suggestion is the rate where the smoothed training
loss falls fastest. Only training batches are given to it: no validation or test image takes part.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.tuner import Tuner

from finetune.data.datamodule import ImageDataModule
from finetune.training.module import Classifier
from zoo._io import write_atomic, write_text_atomic
from zoo.errors import ZooError

LR_RANGE = (1e-6, 1.0)
STEPS = 100
PLOT_FILE = "lr_find.png"
RESULT_FILE = "lr_find.json"


@dataclass(frozen=True)
class LrFinding:
    """The suggested learning rate and the curve it was read from."""

    suggestion: float
    learning_rates: list[float]
    losses: list[float]

    @property
    def steps(self) -> int:
        """Steps the test ran: fewer than ``STEPS`` when the loss diverged and Lightning stopped it early."""
        return len(self.learning_rates)


def find_lr(module: Classifier, data: ImageDataModule, trainer: pl.Trainer, folder: Path | None) -> LrFinding:
    """Run the range test for ``module`` on ``data``'s training split; write the plot and the curve to ``folder``.

    ``module``'s network is left as it was; its optimiser settings keep a placeholder rate until the
    caller sets the suggestion.
    """
    # configure_optimizers needs a number; the finder overrides every group's rate during the test.
    module.optim = dataclasses.replace(module.optim, lr=LR_RANGE[0])
    data.trainer = trainer  # the training batches (or cached features) are made as the run will make them
    # Lightning's finder always draws its own progress bar; a log file gets only the result line.
    quiet = contextlib.nullcontext() if sys.stderr.isatty() else contextlib.redirect_stderr(io.StringIO())
    with warnings.catch_warnings(), quiet:
        warnings.filterwarnings("ignore", message=r".*validation_step.*no `val_dataloader`")
        warnings.filterwarnings("ignore", message=r".*does not have many workers")
        finder = Tuner(trainer).lr_find(module, train_dataloaders=data.train_dataloader(), min_lr=LR_RANGE[0],
                                        max_lr=LR_RANGE[1], num_training=STEPS, update_attr=False)
    if finder is None or (suggestion := finder.suggestion()) is None:
        steps = len(finder.results.get("lr", [])) if finder else 0
        raise ZooError(f"the learning-rate finder could not read a rate from {steps} "
                       "steps (too few training images, or a loss that never fell): pass a number, e.g. --lr 1e-3")
    finding = LrFinding(float(suggestion), [float(lr) for lr in finder.results["lr"]],
                        [float(loss) for loss in finder.results["loss"]])
    if folder is not None:
        import matplotlib.pyplot as plt
        from matplotlib.figure import Figure

        figure = finder.plot(suggest=True)
        assert isinstance(figure, Figure)  # without an ax, plot() draws on a Figure of its own
        figure.axes[0].set_title(f"learning-rate range test on the training split: suggestion {finding.suggestion:.2e}")
        try:  # atomic: a full or read-only disk is one line, no half-written file
            write_atomic(folder / PLOT_FILE, lambda temporary: figure.savefig(temporary, format="png", dpi=100))
        finally:
            plt.close(figure)
        write_text_atomic(folder / RESULT_FILE, json.dumps({
            "suggestion": finding.suggestion, "min_lr": LR_RANGE[0], "max_lr": LR_RANGE[1], "steps": finding.steps,
            "max_steps": STEPS,
            "split": "train", "lr": finding.learning_rates, "loss": finding.losses,
        }, indent=2) + "\n")
    return finding
