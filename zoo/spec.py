"""The data that describes one architecture entry of the registry."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

    from zoo.weights.source import WeightSource

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class IlsvrcResult:
    """A published ILSVRC classification result of an architecture family (error in percent)."""

    year: int
    place: int
    top5_error: float
    description: str
    source: str
    models: int = 1  # networks averaged into top5_error: above 1, an ensemble's figure
    single_model_top5_error: float | None = None  # one network's figure, where the paper gives one
    single_model_split: str | None = None  # the images that figure was measured on ("val")
    single_model: str | None = None  # the registry name of that network (ResNet's is resnet152's)

    @property
    def standing(self) -> str:
        """The place in words: ``winner``, ``runner-up`` or ``3rd``."""
        return {1: "winner", 2: "runner-up"}.get(self.place, f"{self.place}th" if self.place > 3 else "3rd")


def rgb(values: Sequence[float]) -> tuple[float, float, float]:
    """Three per-channel values (a mean or std given as a list) as the tuple an entry holds."""
    red, green, blue = values
    return float(red), float(green), float(blue)


@dataclass(frozen=True)
class Preprocessing:
    """How images are prepared for a network: shorter side resized to ``resize``, centre crop of ``crop``, scaled
    to 0–1 and normalised with ``mean`` and ``std``. It belongs to the weights (torchvision's ``transforms()``,
    timm's data config); ``ArchSpec.preprocessing`` is the entry's own, for training from scratch."""

    crop: int
    resize: int
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    # Where the resize comes from a crop fraction (timm's crop_pct: resize = ⌊crop / fraction⌋), that fraction; the
    # rounded resize alone would drift a pixel at other crops (convnext at 288: ⌊288 / 0.95⌋ = 303, not 302).
    crop_fraction: float | None = None
    # Read by pydantic where a file nests it (zoo.records): a key it does not know is refused, also in the schema.
    __pydantic_config__ = {"extra": "forbid"}

    def at(self, crop: int) -> Preprocessing:
        """The same preprocessing for another crop size: the resize keeps its ratio to the crop (232 / 224)."""
        if crop == self.crop:
            return self
        resize = math.floor(crop / self.crop_fraction) if self.crop_fraction else crop * self.resize // self.crop
        return replace(self, crop=crop, resize=resize)


@dataclass(frozen=True)
class WeightsInfo:
    """One set of pretrained weights: where it lives and how well it does on ImageNet-1K (percent)."""

    tag: str
    url: str | None
    path: Path
    top1_error: float | None = None
    top5_error: float | None = None
    num_params: int | None = None
    gmacs: float | None = None
    preprocessing: Preprocessing | None = None  # what the weights were evaluated with; None: the entry's own

    @property
    def cached(self) -> bool:
        return self.path.is_file()


@dataclass(frozen=True)
class ArchSpec:
    """An architecture entry: how to build it, where its head is, and what is known of it.

    ``head`` is the dotted path of the classifier; ``other_heads`` those of any further classifiers whose outputs
    the network combines (distilled DeiT's ``head_dist``): each is replaced for a new task.

    ``build`` returns the untrained network in its published form (1000 ImageNet classes; small_cnn
    with 10). Parameter counts and FLOPs are derived from it (see ``zoo.profile``), not stored.
    """

    name: str
    family: str
    depth: int
    year: int | None
    build: Callable[[], nn.Module]
    head: str
    other_heads: tuple[str, ...] = ()
    input_size: int = 224
    min_input_size: int = 32
    fixed_input_size: bool = False  # takes input_size only (a ViT's position embedding has one size)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"
    crop_fraction: float = 0.875
    ilsvrc: tuple[IlsvrcResult, ...] = ()
    weights: WeightSource | None = None
    ignored_weight_prefixes: tuple[str, ...] = ()
    description: str = ""
    # The library that defines the network and its name there: a bundle names them so plain timm or
    # torchvision can rebuild it (zoo's efficientnet_lite0 is timm's tf_efficientnet_lite0, not its efficientnet_lite0).
    library: str = "zoo"
    library_name: str = ""
    library_args: tuple[tuple[str, bool | int | float | str], ...] = ()  # its build arguments besides num_classes

    def input_size_problem(self, size: int, flag: str = "--image-size") -> str | None:
        """Why images of ``size`` px cannot go through this network (and what to pass instead), or None."""
        if self.fixed_input_size and size != self.input_size:
            return (f"{self.name} takes images of {self.input_size} px only (its input size is fixed): "
                    f"leave out {flag} or pass {self.input_size} (got {size})")
        if size < self.min_input_size:
            return f"{self.name} needs images of at least {self.min_input_size} px: raise {flag} (got {size})"
        return None

    @property
    def heads(self) -> tuple[str, ...]:
        """The dotted paths of every classifier, ``head`` first."""
        return (self.head, *self.other_heads)

    @property
    def preprocessing(self) -> Preprocessing:
        """The entry's own preprocessing (from scratch or a weights file); pretrained weights bring theirs."""
        return Preprocessing(self.input_size, math.floor(self.input_size / self.crop_fraction), self.interpolation,
                             self.mean, self.std, self.crop_fraction)

    @property
    def headline_ilsvrc(self) -> IlsvrcResult | None:
        """The family's first listed ILSVRC result (for AlexNet: the ILSVRC-data-only figure)."""
        return self.ilsvrc[0] if self.ilsvrc else None
