"""Exported bundles, read side: a folder that rebuilds a fine-tuned model with zoo alone (no Lightning).

A bundle holds ``model.safetensors`` (the weights) and ``zoo.json`` (architecture, classes, input settings,
the softmax temperature, validation and test metrics, versions); ``zoo export`` adds ``model.torchscript.pt``
and ``model.onnx`` on request. Those output raw logits: ``zoo.json``'s ``temperature`` calibrates them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from zoo.errors import WeightsError, ZooError
from zoo.factory import create_model
from zoo.images import center_crop_transform
from zoo.weights import read_state_dict

if TYPE_CHECKING:
    from PIL import Image

WEIGHTS_FILE = "model.safetensors"
METADATA_FILE = "zoo.json"
TORCHSCRIPT_FILE = "model.torchscript.pt"
ONNX_FILE = "model.onnx"
# What rebuilding the network and its preprocessing needs; the rest of zoo.json is information.
REQUIRED_KEYS = ("arch", "classes", "num_classes", "image_size", "resize", "mean", "std", "interpolation")


def build_network(metadata: dict[str, Any], state_dict: dict[str, Tensor], origin: str) -> nn.Module:
    """The registry network of ``metadata`` with exactly ``state_dict`` loaded, in eval mode."""
    network = create_model(metadata["arch"], metadata["num_classes"], dropout=metadata.get("dropout", 0.0))
    try:
        network.load_state_dict(state_dict)
    except RuntimeError as error:
        reason = " ".join(str(error).split())[:300]
        raise WeightsError(f"the weights in {origin} do not fit {metadata['arch']}: {reason}") from error
    return network.eval()


def preprocessing(metadata: dict[str, Any]) -> Callable[[Image.Image], Tensor]:
    """Resize, centre crop and normalise as the model was validated (PIL image → float tensor)."""
    return center_crop_transform(
        metadata["resize"], metadata["image_size"], metadata["interpolation"], metadata["mean"], metadata["std"]
    )


class LoadedModel:
    """A fine-tuned classifier outside any training framework: its classes, preprocessing and softmax.

    ``temperature`` (fitted on validation logits after training; 1.0 for models without one) divides
    the logits before the softmax, so the probabilities are calibrated; it changes no prediction.
    """

    def __init__(self, network: nn.Module, metadata: dict[str, Any]) -> None:
        self.network = network.eval()
        self.metadata = metadata
        self.classes: list[str] = list(metadata["classes"])
        temperature = metadata.get("temperature", 1.0)
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
            raise ZooError(f"the model's softmax temperature must be a positive number, got {temperature!r}: "
                           "export or train it again")
        self.temperature = float(temperature)
        self.transform = preprocessing(metadata)

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    def to(self, device: str | torch.device) -> LoadedModel:
        self.network.to(device)
        return self

    @torch.inference_mode()
    def logits(self, batch: Tensor) -> Tensor:
        """Raw scores of a preprocessed batch ``(N, 3, H, W)``, on the CPU."""
        return self.network(batch.to(self.device)).float().cpu()

    def predict(self, images: Tensor | Sequence[Image.Image | str | Path]) -> Tensor:
        """Class probabilities ``(N, classes)`` of PIL images, image paths, or a preprocessed batch."""
        if not isinstance(images, Tensor):
            images = torch.stack([self.transform(_open_rgb(image)) for image in images])
        elif images.dim() == 3:
            images = images.unsqueeze(0)
        return (self.logits(images) / self.temperature).softmax(dim=1)


def _open_rgb(image: Image.Image | str | Path) -> Image.Image:
    from zoo.images import load_rgb, to_rgb

    return to_rgb(image) if not isinstance(image, (str, Path)) else load_rgb(Path(image))


def check_metadata(metadata: Any, origin: str) -> dict[str, Any]:
    """``metadata`` when it holds every key that rebuilding the model needs."""
    missing = [key for key in REQUIRED_KEYS if not isinstance(metadata, dict) or key not in metadata]
    if missing:
        raise ZooError(f"{origin} lacks {', '.join(missing)}: make it again with zoo finetune or zoo export")
    return metadata


def read_metadata(folder: Path) -> dict[str, Any]:
    """The ``zoo.json`` of bundle ``folder``, checked for the keys rebuilding the model needs."""
    path = Path(folder) / METADATA_FILE
    if not path.is_file():
        raise ZooError(f"{folder} is not a zoo bundle: it has no {METADATA_FILE} (make one with zoo export)")
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ZooError(f"cannot read {path}: {error}; export the bundle again") from error
    return check_metadata(metadata, str(path))


def load(folder: str | Path) -> LoadedModel:
    """Rebuild the model of an exported bundle (``zoo export``) on the CPU, ready to ``predict``."""
    folder = Path(folder)
    metadata = read_metadata(folder)
    weights = folder / WEIGHTS_FILE
    return LoadedModel(build_network(metadata, read_state_dict(weights), str(weights)), metadata)
