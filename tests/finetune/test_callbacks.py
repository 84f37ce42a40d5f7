"""The stop on divergence: a NaN loss ends the run with one line, reading the loss off a GPU only every N steps."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from finetune.training.callbacks import DivergedError, FiniteLoss

NAN_FROM_STEP = 4


class _Diverging(pl.LightningModule):
    """A linear model whose loss becomes NaN at its ``NAN_FROM_STEP``-th step."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(3, 1)

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = nn.functional.mse_loss(self.layer(batch[0]), batch[1])
        return loss * float("nan") if self.global_step + 1 >= NAN_FROM_STEP else loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_a_nan_loss_stops_a_real_run_at_its_step_in_one_line() -> None:
    data = DataLoader(TensorDataset(torch.randn(40, 3), torch.randn(40, 1)), batch_size=4)
    trainer = pl.Trainer(accelerator="cpu", max_epochs=1, callbacks=[FiniteLoss()], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises(DivergedError) as raised:
        trainer.fit(_Diverging(), data)
    # On the CPU, where reading the loss costs nothing, the step the loss became NaN.
    assert str(raised.value) == (f"the training loss became nan at epoch 1, step {NAN_FROM_STEP}: the run diverged; "
                                 "start again with a lower --lr (or --lr auto)")
    assert trainer.global_step == NAN_FROM_STEP


class _GpuLoss:
    """A loss as a GPU holds it; ``reads`` counts the steps at which ``float`` waited for the device."""

    device = torch.device("cuda")

    def __init__(self, value: float, reads: list[int], step: int) -> None:
        self.value, self.reads, self.step = value, reads, step

    def __float__(self) -> float:
        self.reads.append(self.step)
        return self.value


def _run_on_a_gpu(callback: FiniteLoss, steps: int, batches_per_epoch: int, nan_from: int) -> list[int]:
    """The callback over ``steps`` steps of one batch each, the loss NaN from ``nan_from`` on; the steps it read."""
    reads: list[int] = []
    for step in range(1, steps + 1):
        trainer = SimpleNamespace(global_step=step, num_training_batches=batches_per_epoch,
                                  current_epoch=(step - 1) // batches_per_epoch)
        loss = _GpuLoss(float("nan") if step >= nan_from else 1.0, reads, step)
        callback.on_train_batch_end(trainer, None, {"loss": loss}, None, (step - 1) % batches_per_epoch)
    return reads


def test_on_a_gpu_the_loss_is_read_every_n_steps_and_a_nan_stops_the_run_within_n() -> None:
    callback = FiniteLoss(every=50)
    assert _run_on_a_gpu(callback, steps=120, batches_per_epoch=1000, nan_from=1000) == [50, 100]
    with pytest.raises(DivergedError, match="became nan at epoch 1, step 100: the run diverged"):
        _run_on_a_gpu(callback, steps=200, batches_per_epoch=1000, nan_from=57)


def test_on_a_gpu_the_last_step_of_an_epoch_is_read_too() -> None:
    with pytest.raises(DivergedError, match="became nan at epoch 1, step 60:"):
        _run_on_a_gpu(FiniteLoss(every=50), steps=200, batches_per_epoch=60, nan_from=57)
