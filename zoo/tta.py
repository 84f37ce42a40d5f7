"""Test-time augmentation's modes and their check, free of torch so that building the CLI parser stays fast.

``flip`` averages a model's logits over the image and its mirror; ``flip-crop`` also over four corner crops
(``zoo.tta_network``). It changes only how a model is measured and used, never which checkpoint is chosen, and a
model whose classes change under a mirror (text, digits) refuses it.
"""

from __future__ import annotations

from typing import Literal

from zoo.errors import ZooError

TtaMode = Literal["none", "flip", "flip-crop"]
TTA_MODES: tuple[str, ...] = ("none", "flip", "flip-crop")


def check_tta(mode: str, flips_change_class: bool = False) -> TtaMode:
    """``mode`` when it is a known TTA and the model allows it; else a one-line error naming the fix."""
    if mode not in TTA_MODES:
        raise ZooError(f"--tta must be one of {', '.join(TTA_MODES)}, got '{mode}'")
    if mode != "none" and flips_change_class:
        raise ZooError(f"--tta {mode} mirrors the images, but this model's classes change under a mirror "
                       "(trained with --flips-change-class): use --tta none")
    return mode  # type: ignore[return-value]  # checked against TTA_MODES above
