"""Data-aware defaults: the settings a run leaves to zoo (``auto`` or unset), chosen from what the data is.

What is looked at: the training images' size, whether they are grey and glyph-like (ink on a plain
background, like digits), how many there are per class, whether the weights are pretrained, and the
device. Every choice is printed with its reason and written into the run's ``config.yaml``; a flag or a
config value always wins. The rules and the figures they were checked against are in docs/honest-numbers.md and
``benchmarks/RESULTS.md`` (``python -m benchmarks.defaults``).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

import numpy as np

from finetune.config import RunConfig, merge
from finetune.data.split import Split, class_counts
from zoo.images import opened
from zoo.profile import profile as profile_network
from zoo.spec import ArchSpec

PROFILE_IMAGES = 64  # images looked at, spread over the training split
SMALL_IMAGE = 64  # px: a shorter side at or below this is a small image
GLYPH_SHARE = 0.5  # share of pixels near the darkest or brightest value that makes an image ink-on-paper
SMALL_DATA = 300  # training images per class below which pretrained fine-tuning crops lightly
CPU_THROUGHPUT = 2e11  # FLOP/s a CPU trains at, roughly (benchmarks/train_throughput: 230 GFLOP/s on resnet50)
GPU_THROUGHPUT = 5e13  # FLOP/s a GPU sustains in bf16 training, roughly (a fifth of an H100's dense peak)
LONG_FINETUNE_MINUTES = 60  # on a GPU, a full fine-tune estimated longer than this starts with a linear probe


@dataclass(frozen=True)
class DataProfile:
    """What the training images are, from a sample of them."""

    num_train: int
    per_class: float  # median training images per class
    side: int  # median shorter side, px
    grey: bool
    glyph_like: bool


@dataclass(frozen=True)
class Decision:
    """One setting zoo chose, and why."""

    key: str  # dotted config key
    value: Any
    reason: str


def _looks(path: Any) -> tuple[int, bool, float]:
    """Shorter side, greyness, and the share of pixels near the image's extremes (ink or paper)."""
    with opened(path) as image:  # zoo's one loader: the pixel budget checked before decoding
        image.draft("RGB", (128, 128))  # JPEGs decode at a fraction of their size; enough to judge
        side = min(image.size)
        pixels = np.asarray(image.convert("RGB").resize((min(64, image.width), min(64, image.height))),
                            dtype=np.float32)
    grey = float(np.abs(pixels - pixels.mean(axis=2, keepdims=True)).mean()) < 4.0
    luminance = pixels.mean(axis=2)
    span = float(luminance.max() - luminance.min()) or 1.0
    scaled = (luminance - luminance.min()) / span
    return side, grey, float(((scaled < 0.15) | (scaled > 0.85)).mean())


def profile_data(split: Split) -> DataProfile:
    """Look at up to ``PROFILE_IMAGES`` training images, evenly spread over the split."""
    step = max(1, len(split.train) // PROFILE_IMAGES)
    looks = [_looks(sample.path) for sample in split.train[::step][:PROFILE_IMAGES]]
    sides, greys, extremes = zip(*looks, strict=True)
    counts = [count for count in class_counts(split.train, split.classes).values() if count]
    grey = sum(greys) > len(greys) / 2
    side = int(statistics.median(sides))
    return DataProfile(num_train=len(split.train), per_class=float(statistics.median(counts)), side=side, grey=grey,
                       glyph_like=grey and side <= SMALL_IMAGE and statistics.median(extremes) >= GLYPH_SHARE)


def _augment(profile: DataProfile, pretrained: bool, feature_views: int) -> Decision:
    if profile.glyph_like and feature_views:
        return Decision("data.augment", "light", f"glyph-like images, but {feature_views} augmented feature views "
                                                 "were asked for: the mildest crops")
    if profile.glyph_like:
        return Decision("data.augment", "none", f"small grey glyph-like images ({profile.side} px, ink on a plain "
                                                "background): crops and flips would turn them into other symbols")
    if pretrained and profile.per_class < SMALL_DATA:
        return Decision("data.augment", "light", f"pretrained weights and {profile.per_class:.0f} images per class: "
                                                 "mild crops keep the object while adding variety")
    return Decision("data.augment", "standard", f"{'photos' if not profile.grey else 'grey images'} of "
                                                f"{profile.side} px, {profile.per_class:.0f} per class: random crops "
                                                "and flips preserve their class")


def needs_choosing(config: RunConfig) -> bool:
    """True when some setting is left to zoo."""
    return (config.data.augment == "auto" or config.optim.freeze == "auto" or config.optim.lr is None
            or config.optim.backbone_lr_mult is None or config.trainer.epochs is None)


def choose(config: RunConfig, spec: ArchSpec, split: Split, image_size: int, pretrained: bool,
           on_gpu: bool) -> tuple[RunConfig, list[Decision]]:
    """``config`` with every setting left to zoo decided, and the decisions with their reasons."""
    if not needs_choosing(config):
        return config, []
    decisions: list[Decision] = []
    profile = profile_data(split)
    if config.data.augment == "auto":
        decisions.append(_augment(profile, pretrained, config.data.feature_views))
    freeze = config.optim.freeze
    if freeze == "auto":
        if not pretrained:
            decisions.append(Decision("optim.freeze", "none", "random weights: every layer must learn"))
        else:
            # Forward and backward cost about 3× the forward pass; a fine-tune takes about 6 epochs.
            forward = profile_network(spec).gflops * (image_size / spec.input_size) ** 2
            minutes = forward * 1e9 * 3 * profile.num_train * 6 / (GPU_THROUGHPUT if on_gpu else CPU_THROUGHPUT) / 60
            if not on_gpu or minutes > LONG_FINETUNE_MINUTES:
                where = "a GPU" if on_gpu else "a CPU"
                decisions.append(Decision(
                    "optim.freeze", "backbone",
                    f"pretrained weights on {where}: a full fine-tune of {spec.name} on {profile.num_train} images "
                    f"would take about {max(1, round(minutes))} min; training the head on cached backbone features "
                    "takes a fraction of that (ask for a full fine-tune with --freeze until-epoch 1)"))
            else:
                decisions.append(Decision("optim.freeze", "until-epoch",
                                          "pretrained weights: one epoch trains the new head alone, then every layer "
                                          "(fastai's fine_tune recipe)"))
        freeze = decisions[-1].value
    steps_per_epoch = max(1, math.ceil(profile.num_train / config.data.batch_size))
    if config.optim.lr is None:
        if not pretrained:
            lr, reason = 3e-3, "random weights: a high rate"
        elif freeze == "backbone":
            lr, reason = 3e-3, "a linear head on fixed features"
        else:
            lr, reason = 1e-3, "pretrained weights: the head at 1e-3, the backbone 10× lower"
        decisions.append(Decision("optim.lr", lr, reason))
    if config.optim.backbone_lr_mult is None:
        mult = 0.1 if pretrained and freeze != "backbone" else 1.0
        decisions.append(Decision("optim.backbone_lr_mult", mult, "discriminative rates: pretrained layers move less"
                                  if mult < 1 else "one rate for every layer"))
    if config.trainer.epochs is None:
        if freeze == "backbone":
            epochs = min(20, max(10, math.ceil(200 / steps_per_epoch)))
            reason = "a linear head on cached features: about 200 steps, 10 to 20 epochs"
        elif pretrained:
            epochs = min(20, max(5, math.ceil(300 / steps_per_epoch)))
            reason = "pretrained weights converge in a few hundred steps"
        else:
            epochs = min(30, max(15, math.ceil(600 / steps_per_epoch)))
            reason = "from scratch: about 600 steps, 15 to 30 epochs"
        decisions.append(Decision("trainer.epochs", epochs, f"{reason} ({steps_per_epoch} steps per epoch)"))
    overrides: dict[str, Any] = {}
    for decision in decisions:
        section, name = decision.key.split(".")
        overrides.setdefault(section, {})[name] = decision.value
    if freeze == "until-epoch" and config.optim.freeze == "auto":
        overrides.setdefault("optim", {})["unfreeze_epoch"] = 1
    return merge(config, overrides), decisions
