"""zoo: the ImageNet-winning CNNs and any timm model in one registry, ready to fine-tune.

This package is the registry and model factory only (torch, torchvision, timm); it never imports Lightning.
"""

from zoo.bundle import LoadedModel, load
from zoo.errors import UnknownModelError, WeightsError, ZooError
from zoo.factory import ClassifierHead, create_model
from zoo.registry import get_spec, list_models
from zoo.spec import ArchSpec, IlsvrcResult, WeightsInfo
from zoo.summary import describe, summarize

__version__ = "0.1.0"

__all__ = [
    "ArchSpec", "ClassifierHead", "IlsvrcResult", "LoadedModel", "UnknownModelError", "WeightsError", "WeightsInfo",
    "ZooError", "create_model", "describe", "get_spec", "list_models", "load", "summarize",
]
