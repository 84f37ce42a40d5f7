"""Exported bundles, read side: a folder that rebuilds a fine-tuned model with zoo alone (no Lightning).

A bundle holds ``model.safetensors`` (the weights, under the published architecture's key names, with the classes
and preprocessing in its header), ``zoo.json`` (architecture and the library that defines it, classes, input
settings, the softmax temperature, validation and test metrics, versions) and ``README.md`` (the model card); timm
architectures also get timm's ``config.json``. ``zoo export`` adds ``model.torchscript.pt`` and ``model.onnx`` on
request. Those output raw logits: ``zoo.json``'s ``temperature`` calibrates them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from zoo.errors import WeightsError, ZooError, describe_error
from zoo.factory import create_model
from zoo.images import center_crop_transform
from zoo.interop import zoo_state_dict
from zoo.records import BundleMetadata, ModelMetadata, check_metadata
from zoo.tta import TtaMode, check_tta
from zoo.tta_network import TtaNetwork
from zoo.weights.loading import read_state_dict

if TYPE_CHECKING:
    from PIL import Image

    ImageInput = Image.Image | str | Path

WEIGHTS_FILE = "model.safetensors"
METADATA_FILE = "zoo.json"
TORCHSCRIPT_FILE = "model.torchscript.pt"
ONNX_FILE = "model.onnx"
TIMM_CONFIG_FILE = "config.json"  # timm's, for timm.create_model("local-dir:BUNDLE")
MODEL_CARD_FILE = "README.md"  # the model card, in the Hugging Face layout
def build_network(metadata: ModelMetadata, state_dict: dict[str, Tensor], origin: str) -> nn.Module:
    """The registry network of ``metadata`` with exactly ``state_dict`` loaded, in eval mode.

    The weights are first matched against a network on the meta device (no memory, no time): a file whose
    architecture or class count was changed to a huge one is refused before gigabytes are allocated for it.
    """
    try:
        with torch.device("meta"):
            skeleton = create_model(metadata.arch, metadata.num_classes, dropout=metadata.dropout)
    except Exception:  # noqa: BLE001  (some networks read tensor values while built: checked below, for real)
        skeleton = None
    if skeleton is not None:  # assign: the file's tensors are taken, not copied into meta ones (torch warns)
        _load(skeleton, state_dict, metadata, origin, assign=True)
    network = create_model(metadata.arch, metadata.num_classes, dropout=metadata.dropout)
    _load(network, state_dict, metadata, origin)
    return network.eval()


def _load(network: nn.Module, state_dict: dict[str, Tensor], metadata: ModelMetadata, origin: str,
          assign: bool = False) -> None:
    try:
        network.load_state_dict(zoo_state_dict(network, state_dict), assign=assign)
    except RuntimeError as error:
        reason = " ".join(str(error).split())[:300]
        raise WeightsError(f"the weights in {origin} do not fit {metadata.arch}: {reason}") from error


def preprocessing(metadata: ModelMetadata) -> Callable[[Image.Image], Tensor]:
    """Resize, centre crop and normalise as the model was validated (PIL image → float tensor)."""
    return center_crop_transform(metadata.preprocessing)


class LoadedModel:
    """A fine-tuned classifier outside any training framework: its classes, preprocessing and softmax.

    ``temperature`` (fitted on validation logits after training; 1.0 for models without one) divides
    the logits before the softmax, so the probabilities are calibrated; it changes no prediction.
    """

    def __init__(self, network: nn.Module, metadata: ModelMetadata) -> None:
        self.network = network.eval()
        self.metadata = metadata
        self.classes: list[str] = list(metadata.classes)
        self.temperature = float(metadata.temperature)
        self.transform = preprocessing(metadata)
        self.tta: TtaMode = check_tta(metadata.tta, metadata.flips_change_class)

    def use_tta(self, mode: str) -> LoadedModel:
        """Average the logits over ``mode``'s views from now on; refused where the model's classes change under a
        mirror."""
        self.tta = check_tta(mode, self.metadata.flips_change_class)
        return self

    @property
    def augmented(self) -> nn.Module:
        """The network with this model's test-time augmentation."""
        return TtaNetwork(self.network, self.tta)

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    def to(self, device: str | torch.device) -> LoadedModel:
        self.network.to(device)
        return self

    @torch.inference_mode()
    def logits(self, batch: Tensor) -> Tensor:
        """Raw scores of a preprocessed batch ``(N, 3, H, W)``, on the CPU."""
        return self.augmented(batch.to(self.device)).float().cpu()

    def predict_proba(self, images: Tensor | ImageInput | Sequence[ImageInput]) -> Tensor:
        """Class probabilities ``(N, classes)`` of one image or several: PIL images, paths (``str`` or ``Path``),
        or a preprocessed batch ``(N, 3, H, W)`` / single image ``(3, H, W)``; columns in the order of ``classes``."""
        if isinstance(images, Tensor):
            batch = images.unsqueeze(0) if images.dim() == 3 else images
        else:
            # One path or image is one image: a str is a sequence too, of characters that are no files.
            many = images if isinstance(images, Sequence) and not isinstance(images, str) else [images]
            batch = torch.stack([self.transform(self.open_rgb(image)) for image in many])
        return (self.logits(batch) / self.temperature).softmax(dim=1)

    def predict(self, images: Tensor | ImageInput | Sequence[ImageInput],
                top_k: int = 5) -> list[list[tuple[str, float]]]:
        """Per image, its ``top_k`` most probable class names with their calibrated probabilities, best first
        (the inputs of ``predict_proba``; ``top_k`` is capped at the class count)."""
        if top_k < 1:
            raise ZooError(f"top_k must be at least 1, got {top_k}")
        values, indices = self.predict_proba(images).topk(min(top_k, len(self.classes)), dim=1)
        return [[(self.classes[c], p) for c, p in zip(row_indices, row_values, strict=True)]
                for row_values, row_indices in zip(values.tolist(), indices.tolist(), strict=True)]

    def open_rgb(self, image: ImageInput) -> Image.Image:
        """An image, or the file at a path, as 8-bit RGB read for this model (``zoo.images.load_rgb``: a huge
        image reduced after decoding, one over the pixel budget refused with ``ImageSizeError``)."""
        from zoo.images import load_rgb, to_rgb

        fit = self.metadata.preprocessing.resize
        return to_rgb(image) if not isinstance(image, (str, Path)) else load_rgb(Path(image), fit=fit)


def read_metadata(folder: Path) -> BundleMetadata:
    """The ``zoo.json`` of bundle ``folder``, checked for the keys rebuilding the model needs."""
    path = Path(folder) / METADATA_FILE
    if not path.is_file():
        raise ZooError(f"{folder} is not a zoo bundle: it has no {METADATA_FILE} (make one with zoo export)")
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as error:  # RecursionError: JSON nested thousands deep
        raise ZooError(f"cannot read {path}: {describe_error(error)}; export the bundle again") from error
    checked = check_metadata(metadata, str(path), BundleMetadata)
    assert isinstance(checked, BundleMetadata)
    return checked


def load(folder: str | Path) -> LoadedModel:
    """Rebuild the model of an exported bundle (``zoo export``) on the CPU, ready to ``predict``."""
    folder = Path(folder)
    metadata = read_metadata(folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise ZooError(f"{folder} is not a complete zoo bundle: it has no {WEIGHTS_FILE} (export it again)")
    return LoadedModel(build_network(metadata, read_state_dict(weights), str(weights)), metadata)
