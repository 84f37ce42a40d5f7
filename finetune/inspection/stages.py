"""A network's stages: the last feature map at each size, found by running it once on an image.

The stages are read off the forward pass, not typed in per family: among the network's children and
grandchildren (ResNet's ``layer1``-``layer4``, EfficientNet's ``blocks.0``-``blocks.6``, GoogLeNet's
inception blocks, VGG's ``features``), the last module to finish at each feature-map size. The head's adaptive
pooling is left out: it only resizes the last stage's map. The last stage is the network's last convolutional
stage, the layer Grad-CAM looks at by default.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

STAGE_DEPTH = 2  # children and grandchildren of the network


@dataclass(frozen=True)
class Stage:
    """A module's output for one image: ``C×H×W`` activations (on the CPU)."""

    name: str
    activations: Tensor


@dataclass(frozen=True)
class Forward:
    """One forward pass of one image: the logits, the stages, and the outputs of modules asked for by name."""

    logits: Tensor
    stages: list[Stage]
    outputs: dict[str, Tensor]


def _is_stage(name: str, module: nn.Module) -> bool:
    return bool(name) and name.count(".") < STAGE_DEPTH and not isinstance(
        module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d))


def run(network: nn.Module, image: Tensor, names: Sequence[str] = ()) -> Forward:
    """Run ``network`` (eval mode) on a ``1×3×H×W`` batch, recording its stages and the outputs of ``names``."""
    finished: list[tuple[str, Tensor]] = []  # in the order modules finish
    outputs: dict[str, Tensor] = {}
    modules = dict(network.named_modules())

    def record(name: str, output: object) -> None:
        if isinstance(output, Tensor):
            if name in names:
                outputs[name] = output.detach().float().cpu()
            if _is_stage(name, modules[name]) and output.dim() == 4 and output.shape[-2:].numel() > 1:
                finished.append((name, output.detach().float().cpu()))

    hooks = [module.register_forward_hook(lambda _m, _i, output, name=name: record(name, output))
             for name, module in modules.items() if name in names or _is_stage(name, module)]
    try:
        with torch.no_grad():
            logits = network.eval()(image).float().cpu()
    finally:
        for hook in hooks:
            hook.remove()
    stages: list[Stage] = []
    for name, output in finished:  # the last of each run of one feature-map size
        if stages and stages[-1].activations.shape[-2:] == output.shape[-2:]:
            stages.pop()
        stages.append(Stage(name, output[0]))
    return Forward(logits, stages, outputs)
