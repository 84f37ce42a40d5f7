"""Test-time augmentation at work: a network whose logits are averaged over views of each batch (fastai's
``Learner.tta``)."""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from zoo.tta import TtaMode

CROP_SHARE = 0.9  # each corner crop keeps 90% of the side: a small shift and zoom


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
