"""Figures derived from the built network: parameters, FLOPs and a per-stage summary.

Everything is measured on the ``meta`` device, so even VGG-19 costs no memory and no time to build.
FLOPs count 2 per multiply-accumulate (torchvision's ``_ops`` metadata counts multiply-accumulates).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from zoo.spec import ArchSpec


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


@functools.lru_cache(maxsize=None)
def profile(spec: ArchSpec) -> Profile:
    """Measure the entry's published form (1000 classes; small_cnn with 10) on the meta device."""
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
    tensor = output[0] if isinstance(output, (tuple, list)) else output
    return tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else ()
