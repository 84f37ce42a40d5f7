"""A fine-tuned zoo network in the form its own library publishes it, so plain timm / torchvision load a bundle.

zoo replaces a classifier by ``ClassifierHead`` (``dropout`` + ``linear``), whose weights are ``<head>.linear.*``.
Dropout has no parameters, so the same tensors under ``<head>.*`` are the published architecture's own state
dict: ``torchvision.models.get_model(name, num_classes=N)`` and ``timm.create_model(name, num_classes=N)`` take it
as it is, and in eval mode (dropout off) they compute the same logits.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from zoo.errors import ZooError
from zoo.factory import ClassifierHead

if TYPE_CHECKING:
    from zoo.records import BundleMetadata, ModelMetadata

HEAD_LAYER = "linear"  # the child of ClassifierHead that holds the weights


def head_paths(network: nn.Module) -> list[str]:
    """The dotted paths of every ``ClassifierHead`` in ``network`` (two for distilled DeiT)."""
    return [name for name, module in network.named_modules() if isinstance(module, ClassifierHead)]


def plain_state_dict(network: nn.Module) -> dict[str, Tensor]:
    """``network``'s tensors under the published architecture's key names: ``fc.linear.weight`` → ``fc.weight``."""
    renames = {f"{head}.{HEAD_LAYER}.": f"{head}." for head in head_paths(network)}
    plain = {}
    for key, tensor in network.state_dict().items():
        prefix = next((old for old in renames if key.startswith(old)), None)
        plain[key if prefix is None else renames[prefix] + key.removeprefix(prefix)] = tensor
    return plain


def zoo_state_dict(network: nn.Module, state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """The reverse of ``plain_state_dict``: a published-form state dict under ``network``'s own keys.

    Keys already in zoo's form (checkpoints, bundles written before plain names) pass through unchanged.
    """
    heads = [f"{head}." for head in head_paths(network)]
    renamed = {}
    for key, tensor in state_dict.items():
        head = next((head for head in heads if key.startswith(head)), None)
        if head is not None and not key.startswith(f"{head}{HEAD_LAYER}."):
            key = f"{head}{HEAD_LAYER}.{key.removeprefix(head)}"
        renamed[key] = tensor
    return renamed


def crop_pct(image_size: int, resize: int) -> float:
    """timm's crop fraction for a resize of the shorter side before the crop: timm resizes to
    ``floor(image_size / crop_pct)``.

    The plain ratio can land a hair under the resize in floating point (224 / (224 / 232) < 232), so the
    fraction is nudged down until timm's formula gives exactly zoo's resize.
    """
    fraction = image_size / resize
    while math.floor(image_size / fraction) < resize:
        fraction = math.nextafter(fraction, 0.0)
    return fraction


def timm_data_config(metadata: ModelMetadata) -> dict[str, Any]:
    """zoo's evaluation preprocessing as timm's data config (``timm.data.resolve_data_config``'s keys)."""
    return {
        "input_size": (3, metadata.image_size, metadata.image_size),
        "interpolation": metadata.preprocessing.interpolation,
        "mean": tuple(metadata.preprocessing.mean),
        "std": tuple(metadata.preprocessing.std),
        "crop_pct": crop_pct(metadata.image_size, metadata.preprocessing.resize),
        "crop_mode": "center",
    }


def plain_model(library: str | None, name: str | None, args: dict[str, Any] | None, num_classes: int) -> nn.Module:
    """The published architecture ``name`` of ``library``, built by that library with ``num_classes`` outputs."""
    if library == "torchvision" and name:
        from torchvision.models import get_model

        return get_model(name, weights=None, num_classes=num_classes, **(args or {}))
    if library == "timm" and name:
        import timm

        return timm.create_model(name, pretrained=False, num_classes=num_classes, **(args or {}))
    if library == "zoo" and name == "small_cnn":
        from zoo.small_cnn import SmallCNN

        return SmallCNN(num_classes=num_classes)
    raise ZooError(f"the bundle names no architecture zoo can build outside zoo (library {library}, model {name}): "
                   "export it again with this version of zoo")


def bundle_model(metadata: BundleMetadata) -> nn.Module:
    """The published architecture of a bundle (``plain_model`` of its zoo.json), untrained."""
    return plain_model(metadata.library, metadata.model_name, metadata.model_args, metadata.num_classes)


def write_timm_config(metadata: BundleMetadata, state_dict: dict[str, Tensor], path: Path) -> None:
    """timm's ``config.json`` for a bundle (architecture, num_classes, labels, pretrained_cfg with preprocessing),
    written by timm itself from the plain model, so ``timm.create_model("local-dir:BUNDLE")`` rebuilds it."""
    from timm.models._hub import save_config_for_hf

    model = bundle_model(metadata)
    model.load_state_dict(state_dict)  # the plain keys fit timm's own network, or this names what does not
    save_config_for_hf(model, str(path), model_config={"label_names": list(metadata.classes)},
                       data_config=timm_data_config(metadata))


def header(metadata: BundleMetadata) -> dict[str, str]:
    """What a weights or ONNX file carries about itself: the architecture, its classes and preprocessing."""
    from zoo.records import ModelMetadata

    content = metadata.model_dump(mode="json", include={"library", "model_name", "model_args",
                                                        *ModelMetadata.model_fields})
    return {"zoo": json.dumps(content, ensure_ascii=False)}
