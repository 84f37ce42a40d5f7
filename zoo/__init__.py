"""zoo: the ImageNet-winning CNNs and any timm model in one registry, ready to fine-tune.

This package is the registry and model factory only (torch, torchvision, timm); it never imports Lightning.
Its names load on first use (PEP 562), so ``zoo.errors`` and the ``zoo`` command's parser come without torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zoo.bundle import LoadedModel, load
    from zoo.errors import UnknownModelError, WeightsError, ZooError
    from zoo.factory import ClassifierHead, create_model
    from zoo.registry import get_spec, list_models
    from zoo.spec import ArchSpec, IlsvrcResult, WeightsInfo
    from zoo.summary import describe, summarize

__version__ = "0.1.0"

# public name -> the module that defines it
_HOMES = {
    "LoadedModel": "zoo.bundle", "load": "zoo.bundle",
    "UnknownModelError": "zoo.errors", "WeightsError": "zoo.errors", "ZooError": "zoo.errors",
    "ClassifierHead": "zoo.factory", "create_model": "zoo.factory",
    "get_spec": "zoo.registry", "list_models": "zoo.registry",
    "ArchSpec": "zoo.spec", "IlsvrcResult": "zoo.spec", "WeightsInfo": "zoo.spec",
    "describe": "zoo.summary", "summarize": "zoo.summary",
}

__all__ = [
    "ArchSpec", "ClassifierHead", "IlsvrcResult", "LoadedModel", "UnknownModelError", "WeightsError", "WeightsInfo",
    "ZooError", "create_model", "describe", "get_spec", "list_models", "load", "summarize",
]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'zoo' has no attribute '{name}'")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
