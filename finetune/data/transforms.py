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


def train_transform(spec: ArchSpec, image_size: int, augment: str) -> T.Compose:
    """Random resized crop + horizontal flip (+ TrivialAugment with ``augment='trivial'``)."""
    if augment == "none":
        return eval_transform(spec, image_size)
    steps: list[T.Transform] = [
        T.ToImage(),
        T.RandomResizedCrop(image_size, interpolation=_interpolation(spec), antialias=True),
        T.RandomHorizontalFlip(),
    ]
    if augment == "trivial":
        steps.append(T.TrivialAugmentWide(interpolation=_interpolation(spec)))
    steps += [T.ToDtype(torch.float32, scale=True), T.Normalize(spec.mean, spec.std)]
    return T.Compose(steps)
