"""Figures derived from the built network: parameters, FLOPs and a per-stage summary.

Everything is measured on the ``meta`` device, so even VGG-19 costs no memory and no time to build.
FLOPs count 2 per multiply-accumulate (torchvision's ``_ops`` metadata counts multiply-accumulates).
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from zoo import metadata
from zoo.cache import read_figures, write_figures
from zoo.spec import ArchSpec

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class Stage:
    """One top-level child of the network with its output shape for one default-size image."""

    name: str
    kind: str
    output_shape: tuple[int, ...]
    params: int


@dataclass(frozen=True)
class Profile:
    """Parameters and forward GFLOPs per image at the entry's default input size."""

    params: int
    gflops: float
    stages: tuple[Stage, ...]


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _versions() -> str:
    def installed(package: str) -> str:
        try:
            return version(package)
        except PackageNotFoundError:
            return "-"

    return "/".join(installed(p) for p in ("zoo", "torch", "torchvision", "timm"))


PROFILES = "profiles.json"


@functools.cache
def profile(spec: ArchSpec) -> Profile:
    """The entry's figures, measured once per version set of zoo, torch, torchvision and timm.

    Measuring means building the network (importing torchvision or timm) and one forward pass; the
    cache in ``$ZOO_CACHE/profiles.json`` keeps ``zoo list`` from doing that for every entry every time.
    """
    stored = metadata.profile(spec.name)
    if stored is not None:  # a classic entry: its figures ship with zoo (no torch import)
        return _from_dict(stored)
    key = f"{spec.name}@{spec.input_size}@{_versions()}"
    entries = read_figures(PROFILES)
    if key in entries:
        return _from_dict(entries[key])
    measured = measure(spec)
    entries[key] = asdict(measured)
    write_figures(PROFILES, entries)
    return measured


def _from_dict(stored: dict) -> Profile:
    stages = tuple(Stage(s["name"], s["kind"], tuple(s["output_shape"]), s["params"]) for s in stored["stages"])
    return Profile(stored["params"], stored["gflops"], stages)


def measure(spec: ArchSpec) -> Profile:
    """Measure the entry's published form (1000 classes; small_cnn with 10) on the meta device."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = spec.build().eval()
        image = torch.empty(1, 3, spec.input_size, spec.input_size)
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [
        child.register_forward_hook(lambda _m, _i, out, name=name: shapes.__setitem__(name, _shape(out)))
        for name, child in model.named_children()
    ]
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(image)
    for hook in hooks:
        hook.remove()
    stages = tuple(
        Stage(name, type(child).__name__, shapes.get(name, ()), count_params(child))
        for name, child in model.named_children()
    )
    return Profile(count_params(model), counter.get_total_flops() / 1e9, stages)


def _shape(output: object) -> tuple[int, ...]:
    import torch

    tensor = output[0] if isinstance(output, (tuple, list)) else output
    return tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else ()
