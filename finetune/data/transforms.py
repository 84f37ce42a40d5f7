"""Image transforms derived from a registry entry's data settings (never stored)."""

from __future__ import annotations

import math

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

from zoo.images import center_crop_transform
from zoo.spec import ArchSpec


def _interpolation(spec: ArchSpec) -> InterpolationMode:
    return InterpolationMode(spec.interpolation)


def resize_size(spec: ArchSpec, image_size: int) -> int:
    """The shorter-side resize before the centre crop (224 → 256 at the usual 0.875 crop fraction)."""
    return math.floor(image_size / spec.crop_fraction)


def eval_transform(spec: ArchSpec, image_size: int) -> T.Compose:
    """Resize, centre crop, normalise with the entry's mean and std (the same as an exported bundle's)."""
    return center_crop_transform(resize_size(spec, image_size), image_size, spec.interpolation, spec.mean, spec.std)


# Per-image augmentation policies of torchvision, applied after the random crop and flip.
POLICIES = {
    "trivial": T.TrivialAugmentWide,
    "randaugment": T.RandAugment,
    "autoaugment": T.AutoAugment,  # the ImageNet policy
    "augmix": T.AugMix,
}
# Crop area share of RandomResizedCrop: ImageNet's from-scratch range, or a milder one that keeps most
# of the object (fine-tuning pretrained networks on small data).
CROP_SCALES = {"light": (0.35, 1.0)}
STANDARD_SCALE = (0.08, 1.0)


def crop_scale(augment: str) -> tuple[float, float]:
    """The random crop's area share for an augmentation preset."""
    return CROP_SCALES.get(augment, STANDARD_SCALE)


def per_image(augment: str) -> bool:
    """True for presets whose policy exists only per image (the decode-once cache then runs it per image)."""
    return augment in POLICIES


def train_transform(spec: ArchSpec, image_size: int, augment: str) -> T.Compose:
    """The training transform of a preset: ``none`` (the evaluation transform), ``light`` / ``standard``
    (random resized crop + horizontal flip), or ``standard`` plus a torchvision policy (``POLICIES``)."""
    if augment == "none":
        return eval_transform(spec, image_size)
    steps: list[T.Transform] = [
        T.ToImage(),
        T.RandomResizedCrop(image_size, scale=crop_scale(augment), interpolation=_interpolation(spec), antialias=True),
        T.RandomHorizontalFlip(),
    ]
    if augment in POLICIES:
        steps.append(POLICIES[augment](interpolation=_interpolation(spec)))
    steps += [T.ToDtype(torch.float32, scale=True), T.Normalize(spec.mean, spec.std)]
    return T.Compose(steps)


def batch_mixing(mixup: float, cutmix: float, num_classes: int) -> T.Transform | None:
    """MixUp and / or CutMix of a batch (torchvision), with these Beta(α, α) parameters; None when both are 0.

    They turn the labels into class probabilities, which the cross-entropy loss takes as they are.
    """
    mixes = ([T.MixUp(alpha=mixup, num_classes=num_classes)] if mixup else []) + \
            ([T.CutMix(alpha=cutmix, num_classes=num_classes)] if cutmix else [])
    if not mixes:
        return None
    return mixes[0] if len(mixes) == 1 else T.RandomChoice(mixes)
