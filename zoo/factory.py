"""Build a registry entry for a new task: pretrained backbone, new Dropout + Linear head."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from zoo.errors import ZooError
from zoo.registry import get_spec
from zoo.weights import load_state_dict_into, resolve_state_dict


class ClassifierHead(nn.Sequential):
    """The new classifier: dropout, then a linear layer to the task's classes (softmax at prediction)."""

    def __init__(self, in_features: int, num_classes: int, dropout: float = 0.2) -> None:
        super().__init__(OrderedDict(dropout=nn.Dropout(dropout), linear=nn.Linear(in_features, num_classes)))


def replace_head(model: nn.Module, head: str, num_classes: int, dropout: float) -> ClassifierHead:
    """Swap the linear layer at dotted path ``head`` for a ``ClassifierHead`` of the same input width."""
    old = model.get_submodule(head)
    if not isinstance(old, nn.Linear):
        raise ZooError(f"the classifier at '{head}' is a {type(old).__name__}, not a Linear layer: "
                       "zoo cannot replace it")
    new = ClassifierHead(old.in_features, num_classes, dropout)
    parent_path, _, attribute = head.rpartition(".")
    setattr(model.get_submodule(parent_path) if parent_path else model, attribute, new)
    return new


def create_model(name: str, num_classes: int, *, weights: str | None = None, dropout: float = 0.2) -> nn.Module:
    """The network ``name`` with its classifier replaced by Dropout(``dropout``) + Linear(``num_classes``).

    ``weights``: ``None`` for random initialisation, ``"default"`` for the entry's default pretrained
    weights, a weight tag (``"IMAGENET1K_V1"``), or the path of a ``.pth`` / ``.safetensors`` file.
    Pretrained weights are loaded into the published network first, so the backbone keeps them.
    """
    if num_classes < 1:
        raise ZooError(f"num_classes must be at least 1, got {num_classes}")
    spec = get_spec(name)
    model = spec.build()
    if weights is not None:
        state_dict, origin = resolve_state_dict(spec, weights, model)
        load_state_dict_into(model, state_dict, spec, origin)
    replace_head(model, spec.head, num_classes, dropout)
    return model
