"""A registry entry as a ready model: its published network with its default pretrained weights and ImageNet's classes.

Commands that look inside a network (``zoo explain``) take a registry name wherever they take a run folder, a
``.ckpt`` or a bundle: an existing path is always read as one of those first.
"""

from __future__ import annotations

from pathlib import Path

import torch

from finetune.shipping.sources import Source, load_source
from zoo.bundle import LoadedModel, ModelMetadata
from zoo.errors import UnknownModelError, ZooError
from zoo.factory import output_count
from zoo.registry import get_spec
from zoo.weights.loading import load_state_dict_into, resolve_state_dict, weights_preprocessing


def imagenet_classes(name: str, num_classes: int) -> list[str]:
    """The class names of a network trained on ImageNet-1k (torchvision's short names) or a timm subset."""
    if num_classes == 1000:
        from torchvision.models import get_model_weights

        # torchvision publishes ILSVRC-2012's names, made distinct (two "crane"s), with every ImageNet weight.
        return list(get_model_weights("resnet50").DEFAULT.meta["categories"])
    from timm.data import ImageNetInfo, infer_imagenet_subset

    subset = infer_imagenet_subset({"num_classes": num_classes})
    if subset is None:
        raise ZooError(f"{name} has {num_classes} outputs, which match no ImageNet subset zoo knows the names of: "
                       "pass a run folder, .ckpt or bundle of a model fine-tuned on your classes")
    return list(ImageNetInfo(subset).label_descriptions())


def load_pretrained(name: str) -> LoadedModel:
    """The published network of registry entry ``name`` with its default weights, on the CPU, in eval mode."""
    spec = get_spec(name)
    if spec.weights is None:
        raise ZooError(f"{name} has no pretrained weights: pass a run folder, .ckpt or bundle of a trained {name}")
    network = spec.build()
    state_dict, origin = resolve_state_dict(spec, "default", network)
    load_state_dict_into(network, state_dict, spec, origin)
    classes = imagenet_classes(name, output_count(network.get_submodule(spec.head)))
    preprocessing = weights_preprocessing(spec, "default")
    metadata = ModelMetadata(arch=name, classes=classes, num_classes=len(classes), preprocessing=preprocessing,
                             weights=origin)
    return LoadedModel(network.eval(), metadata)


def load_model(source: str | Path, device: str | None = None) -> Source:
    """A run folder, ``.ckpt`` or bundle (see ``load_source``), else a registry name with its pretrained weights."""
    path = Path(source)
    if path.exists():
        return load_source(path, device)
    try:
        model = load_pretrained(str(source))
    except UnknownModelError as error:
        raise ZooError(f"{path} does not exist, and {error}: pass a run folder of zoo finetune, a .ckpt file, a bundle "
                       "folder of zoo export, or a registry name") from error
    model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return Source(path, model, None, {"validation": None, "test": None})
