"""Weight averaging: an exponential moving average (EMA) of the weights, validated, chosen and exported.

Lightning's ``WeightAveraging`` callback keeps the average in a ``torch.optim.swa_utils.AveragedModel``, swaps it in
for every validation, writes it as each checkpoint's ``state_dict`` (the training weights go beside it, for a
resume) and leaves it in the module when training ends. The decay warms up as in TensorFlow's
``ExponentialMovingAverage(num_updates=...)`` and timm's ``ModelEmaV3``: early on, when the first weights are far
from good, the average forgets them quickly.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from pytorch_lightning.callbacks import WeightAveraging
from torch import Tensor

WARMUP = 10  # the decay is at most (1 + n) / (WARMUP + n) after n updates


def warmed_ema(decay: float) -> Callable[[list[Tensor], list[Tensor], Tensor], None]:
    """An ``AveragedModel`` multi-tensor update: EMA of ``decay``, lower during the first updates."""

    @torch.no_grad()
    def update(averaged: list[Tensor], current: list[Tensor], updates: Tensor) -> None:
        count = int(updates)
        rate = 1.0 - min(decay, (1 + count) / (WARMUP + count))
        if torch.is_floating_point(averaged[0]):
            torch._foreach_lerp_(averaged, current, rate)
        else:  # integer buffers (BatchNorm's batch counter) follow the model
            for average, value in zip(averaged, current, strict=True):
                average.copy_(value)

    return update


class WeightEma(WeightAveraging):
    """EMA of every weight and buffer after each optimiser step."""

    def __init__(self, decay: float) -> None:
        super().__init__(use_buffers=True, multi_avg_fn=warmed_ema(decay))
        self.decay = decay
