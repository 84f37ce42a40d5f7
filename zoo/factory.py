"""Build a registry entry for a new task: pretrained backbone, new Dropout + classifier head."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import nn

from zoo.errors import ZooError
from zoo.registry import get_spec
from zoo.weights.loading import load_state_dict_into, resolve_state_dict


class ClassifierHead(nn.Sequential):
    """The new classifier: dropout, then ``layer`` to the task's classes (softmax at prediction).

    ``layer`` is a Linear, or what timm's ``reset_classifier`` makes where the published head is no single Linear
    (BiT's 1×1 convolution). Its child is called ``linear`` whatever it is: a bundle's plain key names are
    ``<head>.linear.*`` without ``linear.`` (``zoo.interop``).
    """

    def __init__(self, layer: nn.Module, dropout: float = 0.2) -> None:
        super().__init__(OrderedDict(dropout=nn.Dropout(dropout), linear=layer))


def output_count(layer: nn.Module) -> int:
    """The outputs of a classifier layer (a Linear's features, a 1×1 convolution's channels); 0 when unknown."""
    return int(getattr(layer, "out_features", None) or getattr(layer, "out_channels", None) or 0)


def replace_heads(model: nn.Module, heads: Sequence[str], num_classes: int, dropout: float) -> list[ClassifierHead]:
    """Swap the classifier at each dotted path of ``heads`` for a ``ClassifierHead`` to ``num_classes``.

    A single Linear gets a new Linear of the same input width; other heads (a 1×1 convolution, distilled
    DeiT's two) are made by the network's own ``reset_classifier`` (timm's), which knows their form.
    """
    old = [model.get_submodule(path) for path in heads]
    reset_classifier = getattr(model, "reset_classifier", None)
    layers: list[nn.Module]
    if len(old) == 1 and isinstance(old[0], nn.Linear):
        layers = [nn.Linear(old[0].in_features, num_classes)]
    elif callable(reset_classifier):
        reset_classifier(num_classes)
        layers = [model.get_submodule(path) for path in heads]
    else:
        kinds = ", ".join(f"'{path}' is a {type(layer).__name__}" for path, layer in zip(heads, old, strict=True))
        raise ZooError(f"the classifier is not a single Linear layer ({kinds}) and the network has no "
                       "reset_classifier: zoo cannot replace it")
    new = []
    for path, layer in zip(heads, layers, strict=True):
        head = ClassifierHead(layer, dropout)
        parent_path, _, attribute = path.rpartition(".")
        setattr(model.get_submodule(parent_path) if parent_path else model, attribute, head)
        new.append(head)
    return new


def create_model(name: str, num_classes: int | None = None, *, weights: str | None = None,
                 dropout: float = 0.2) -> nn.Module:
    """The network ``name`` with each classifier replaced by Dropout(``dropout``) + a new layer to ``num_classes``;
    ``num_classes=None`` keeps the published classifier (ImageNet's 1,000 classes; small_cnn's 10), as timm does.

    ``weights``: ``None`` or ``"none"`` (as ``--weights none``) for random initialisation, ``"default"`` for the
    entry's default pretrained weights, a weight tag (``"IMAGENET1K_V1"``), or the path of a ``.pth`` /
    ``.safetensors`` file. Pretrained weights are loaded into the published network first, so the backbone keeps them.
    """
    if num_classes is not None and num_classes < 1:
        raise ZooError(f"num_classes must be at least 1, got {num_classes}")
    spec = get_spec(name)
    model = spec.build()
    if weights is not None and weights != "none":
        state_dict, origin = resolve_state_dict(spec, weights, model)
        load_state_dict_into(model, state_dict, spec, origin)
    if num_classes is not None:
        replace_heads(model, spec.heads, num_classes, dropout)
    return model
