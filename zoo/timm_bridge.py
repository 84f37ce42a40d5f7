"""Any timm model as a registry entry, by name: ``timm/<name>[.<pretrained tag>]``.

timm decides what it knows: the input settings come from ``timm.data.resolve_model_data_config`` of the default
(or named) tag's config, the head paths from the config's ``classifier``; its weights are
``zoo.weights.timm_hub``'s.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from zoo.errors import UnknownModelError
from zoo.spec import ArchSpec, rgb
from zoo.weights.timm_hub import TimmWeights, data_config

if TYPE_CHECKING:
    from torch import nn

def count_weighted_layers(model: nn.Module) -> int:
    """Layers with weights (convolutions and fully connected layers) — a timm model's derived depth."""
    from torch import nn

    return sum(isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)) for m in model.modules())


@functools.lru_cache(maxsize=64)
def timm_spec(model_name: str) -> ArchSpec:
    """The entry of timm's ``model_name``; its input settings are those of its default (or named) pretrained tag."""
    import timm
    import torch

    base, _, tag = model_name.partition(".")
    if not timm.is_model(base):
        raise UnknownModelError(f"timm/{model_name}", (f"timm/{n}" for n in timm.list_models()))
    config = timm.models.get_pretrained_cfg(model_name) or timm.models.get_pretrained_cfg(base)

    def build() -> nn.Module:
        return timm.create_model(model_name, pretrained=False)

    with torch.device("meta"):
        model = build()
    depth = count_weighted_layers(model)
    # Distilled DeiT names two classifiers, ("head", "head_dist"), whose outputs it averages.
    classifier = config.classifier if config is not None and config.classifier else "head"
    heads = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    data = data_config(config, model)
    return ArchSpec(
        name=f"timm/{model_name}",
        family=base.rstrip("0123456789_"),
        depth=depth,
        year=None,
        build=build,
        head=heads[0],
        other_heads=heads[1:],
        input_size=int(data["input_size"][-1]),
        fixed_input_size=bool(config is not None and config.fixed_input_size),
        mean=rgb(data["mean"]),
        std=rgb(data["std"]),
        interpolation=data["interpolation"],
        crop_fraction=data["crop_pct"],
        weights=TimmWeights(base, tag or None),
        description="timm model (depth counts its conv and linear layers)",
        library="timm", library_name=base,
    )
