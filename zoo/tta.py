"""Test-time augmentation: the logits of a preprocessed batch averaged over views of it (fastai's ``Learner.tta``).

``flip`` adds the mirror image; ``flip-crop`` also the four corner crops of ``CROP_SHARE`` of the side, resized
back. It changes only how a model is measured and used, never which checkpoint is chosen, and a model whose
classes change under a mirror (text, digits) refuses it.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn
from torch.nn import functional as F

from zoo.errors import ZooError

TtaMode = Literal["none", "flip", "flip-crop"]
TTA_MODES: tuple[str, ...] = ("none", "flip", "flip-crop")
CROP_SHARE = 0.9  # each corner crop keeps 90% of the side: a small shift and zoom


def check_tta(mode: str, flips_change_class: bool = False) -> TtaMode:
    """``mode`` when it is a known TTA and the model allows it; else a one-line error naming the fix."""
    if mode not in TTA_MODES:
        raise ZooError(f"--tta must be one of {', '.join(TTA_MODES)}, got '{mode}'")
    if mode != "none" and flips_change_class:
        raise ZooError(f"--tta {mode} mirrors the images, but this model's classes change under a mirror "
                       "(trained with --flips-change-class): use --tta none")
    return mode  # type: ignore[return-value]  # checked against TTA_MODES above


def views(batch: Tensor, mode: TtaMode) -> list[Tensor]:
    """The views of an ``N×C×H×W`` batch that ``mode`` averages over."""
    if mode == "none":
        return [batch]
    mirrored = batch.flip(-1)
    if mode == "flip":
        return [batch, mirrored]
    height, width = batch.shape[-2:]
    crop_h, crop_w = max(1, round(height * CROP_SHARE)), max(1, round(width * CROP_SHARE))
    corners = [batch[..., top:top + crop_h, left:left + crop_w]
               for top in (0, height - crop_h) for left in (0, width - crop_w)]
    return [batch, mirrored, *(F.interpolate(corner, size=(height, width), mode="bilinear", align_corners=False)
                               for corner in corners)]


class TtaNetwork(nn.Module):
    """``network`` whose logits are the mean over the TTA views of each batch (``none``: the network itself)."""

    def __init__(self, network: nn.Module, mode: TtaMode) -> None:
        super().__init__()
        self.network = network
        self.mode = mode

    def forward(self, batch: Tensor) -> Tensor:
        outputs = [self.network(view) for view in views(batch, self.mode)]
        return sum(outputs[1:], outputs[0]) / len(outputs)
