"""The data that describes one architecture entry of the registry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from torch import Tensor, nn

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

    @property
    def cached(self) -> bool:
        return self.path.is_file()


class WeightSource(Protocol):
    """Where an entry's pretrained weights come from (torchvision, a pip package, timm's hub)."""

    def available(self) -> tuple[WeightsInfo, ...]: ...

    @property
    def default_tag(self) -> str: ...

    def state_dict(self, tag: str) -> dict[str, Tensor]: ...

    def adapt(self, state_dict: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
        """``state_dict`` made to fit ``model``, the entry's network in its published form (timm's ``filter_fn``)."""
        ...


@dataclass(frozen=True)
class ArchSpec:
    """An architecture entry: how to build it, where its head is, and what is known of it.

    ``build`` returns the untrained network in its published form (1000 ImageNet classes; small_cnn
    with 10). Parameter counts and FLOPs are derived from it (see ``zoo.profile``), not stored.
    """

    name: str
    family: str
    depth: int
    year: int | None
    build: Callable[[], nn.Module]
    head: str
    input_size: int = 224
    min_input_size: int = 32
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

    @property
    def headline_ilsvrc(self) -> IlsvrcResult | None:
        """The family's first listed ILSVRC result (for AlexNet: the ILSVRC-data-only figure)."""
        return self.ilsvrc[0] if self.ilsvrc else None
