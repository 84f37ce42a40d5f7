"""Exported bundles, read side: a folder that rebuilds a fine-tuned model with zoo alone (no Lightning).

A bundle holds ``model.safetensors`` (the weights, under the published architecture's key names, with the classes
and preprocessing in its header), ``zoo.json`` (architecture and the library that defines it, classes, input
settings, the softmax temperature, validation and test metrics, versions) and ``README.md`` (the model card); timm
architectures also get timm's ``config.json``. ``zoo export`` adds ``model.torchscript.pt`` and ``model.onnx`` on
request. Those output raw logits: ``zoo.json``'s ``temperature`` calibrates them.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from zoo.errors import WeightsError, ZooError, describe_error, short_repr
from zoo.factory import create_model
from zoo.images import center_crop_transform
from zoo.interop import zoo_state_dict
from zoo.tta import TTA_MODES, TtaMode, check_tta
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
# What rebuilding the network and its preprocessing needs; the rest of zoo.json is information.
REQUIRED_KEYS = ("arch", "classes", "num_classes", "image_size", "resize", "mean", "std", "interpolation")
# Beyond these a value comes from a damaged or hostile file, not a model: its images or head would fill memory.
MAX_SIDE = 4096  # pixels of image_size and resize
MAX_CLASSES = 10**6
MAX_NORMALIZE, MIN_STD = 1000.0, 1e-3  # bounds of mean and std
TEMPERATURES = (1e-3, 1e3)
# The modes torchvision resizes tensor images with (box and hamming are PIL-only).
INTERPOLATIONS = ("nearest", "nearest-exact", "bilinear", "bicubic")
FIX = "correct it, or make the file again with zoo finetune or zoo export"


@dataclass(frozen=True)
class ModelMetadata:
    """What rebuilds a fine-tuned network and its preprocessing: the ``"zoo"`` entry of every checkpoint."""

    arch: str
    classes: list[str]  # one name per output of the network
    num_classes: int
    image_size: int  # the centre crop, in pixels
    resize: int  # the shorter side before cropping
    mean: list[float]
    std: list[float]
    interpolation: str
    dropout: float = 0.0
    weights: str = "none"  # what training started from
    temperature: float = 1.0  # divides the logits before the softmax (fitted on validation)
    tta: str = "none"  # test-time augmentation the model is used with by default (zoo.tta)
    flips_change_class: bool = False  # a mirror image is another class: flip TTA is refused

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class BundleMetadata(ModelMetadata):
    """``zoo.json``: the model's metadata, the figures measured on it, the versions that wrote it, its files."""

    crop: int | None = None  # the same as image_size, under the name other tools look for
    # The published architecture: its library (torchvision, timm, zoo), its name there and the arguments it is
    # built with besides num_classes (zoo.interop); model.safetensors holds its key names.
    library: str | None = None
    model_name: str | None = None
    model_args: dict[str, Any] | None = None
    data: dict[str, Any] | None = None  # the image folder's name and the images of each split
    validation: dict[str, Any] | None = None  # figures on the images that chose the checkpoint
    test: dict[str, Any] | None = None  # figures on the held-out test images
    zoo_version: str | None = None
    torch_version: str | None = None
    exports: dict[str, Any] = dataclasses.field(default_factory=dict)  # format -> file and max |logit difference|


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
    return center_crop_transform(metadata.resize, metadata.image_size, metadata.interpolation, metadata.mean,
                                 metadata.std)


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

        return to_rgb(image) if not isinstance(image, (str, Path)) else load_rgb(Path(image), fit=self.metadata.resize)


def _finite(value: Any) -> bool:
    """A real number (not a bool) a float can hold: JSON also reads NaN, Infinity and 400-digit integers."""
    try:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    except OverflowError:
        return False


def _whole(value: Any, low: int, high: int = MAX_SIDE) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _three(value: Any, check: Callable[[Any], bool]) -> bool:
    return isinstance(value, list) and len(value) == 3 and all(map(check, value))


def _problem(metadata: dict[str, Any]) -> tuple[str, str] | None:
    """The first key whose value cannot rebuild the model, and what it must be; None when all can."""
    classes, count, size = metadata["classes"], metadata["num_classes"], metadata["image_size"]
    dropout, temperature = metadata.get("dropout", 0.0), metadata.get("temperature", 1.0)
    # In order, each check run only when those before it passed (the later ones rely on them).
    checks: list[tuple[str, Callable[[], bool], str]] = [
        ("arch", lambda: isinstance(metadata["arch"], str) and metadata["arch"] != "",
         "a registry name such as resnet18"),
        ("num_classes", lambda: _whole(count, 1, MAX_CLASSES), f"a whole number of classes from 1 to {MAX_CLASSES}"),
        ("classes", lambda: isinstance(classes, list) and all(isinstance(name, str) and name for name in classes),
         "a list of class names (non-empty strings)"),
        # The network has num_classes outputs: a longer or shorter list names the wrong ones, or none at all.
        ("classes", lambda: len(classes) == count, f"a list of {count} names, one per output of the network"),
        ("classes", lambda: len(set(classes)) == len(classes), "a list of distinct names"),
        ("image_size", lambda: _whole(size, 1), f"a whole number of pixels from 1 to {MAX_SIDE}"),
        # Images are resized (shorter side), then centre-cropped to image_size: a smaller resize would pad them.
        ("resize", lambda: _whole(metadata["resize"], size), f"a whole number of pixels from image_size to {MAX_SIDE}"),
        # Pixels lie in 0..1: beyond these bounds (x - mean) / std overflows float32 and every output is NaN.
        ("mean", lambda: _three(metadata["mean"], lambda value: _finite(value) and abs(value) <= MAX_NORMALIZE),
         f"a list of 3 numbers from -{MAX_NORMALIZE} to {MAX_NORMALIZE}, one per colour channel"),
        ("std", lambda: _three(metadata["std"], lambda value: _finite(value) and MIN_STD <= value <= MAX_NORMALIZE),
         f"a list of 3 numbers from {MIN_STD} to {MAX_NORMALIZE}, one per colour channel"),
        ("interpolation", lambda: metadata["interpolation"] in INTERPOLATIONS, f"one of {', '.join(INTERPOLATIONS)}"),
        ("dropout", lambda: _finite(dropout) and 0 <= dropout < 1, "a number from 0 up to (not including) 1"),
        # logits / temperature must stay finite: 1e-300 would make every probability NaN.
        ("temperature", lambda: _finite(temperature) and TEMPERATURES[0] <= temperature <= TEMPERATURES[1],
         f"a number from {TEMPERATURES[0]} to {TEMPERATURES[1]} (the softmax temperature; fitted ones lie in "
         "0.05-20)"),
        ("weights", lambda: isinstance(metadata.get("weights", "none"), str), "text naming the starting weights"),
        ("tta", lambda: metadata.get("tta", "none") in TTA_MODES, f"one of {', '.join(TTA_MODES)}"),
        ("flips_change_class", lambda: isinstance(metadata.get("flips_change_class", False), bool), "true or false"),
        # zoo.json's information beside the model: read by evaluate, serve and export.
        *((key, lambda key=key: metadata.get(key) is None or isinstance(metadata[key], dict),
           "a mapping of figures or null") for key in ("validation", "test", "data")),
        ("model_args", lambda: metadata.get("model_args") is None or isinstance(metadata["model_args"], dict),
         "a mapping of the library's build arguments or null"),
        ("exports", lambda: isinstance(metadata.get("exports", {}), dict), "a mapping of format to file"),
        ("crop", lambda: metadata.get("crop") is None or _whole(metadata["crop"], 1), "a whole number of pixels"),
        *((key, lambda key=key: metadata.get(key) is None or isinstance(metadata[key], str), "text or null")
          for key in ("zoo_version", "torch_version", "library", "model_name")),
    ]
    return next(((key, expected) for key, passes, expected in checks if not passes()), None)


def check_metadata(metadata: Any, origin: str, record: type[ModelMetadata] = ModelMetadata) -> ModelMetadata:
    """``metadata`` as a ``record`` when it holds every key rebuilding the model needs, each with a value that
    fits it, and no key the record does not know."""
    missing = [key for key in REQUIRED_KEYS if not isinstance(metadata, dict) or key not in metadata]
    if missing:
        raise ZooError(f"{origin} lacks {', '.join(missing)}: make it again with zoo finetune or zoo export")
    known = {field.name for field in dataclasses.fields(record)}
    unknown = sorted(str(key) for key in metadata if key not in known)
    if unknown:
        raise ZooError(f"{origin} has unknown keys {', '.join(unknown[:3])} (written by another version of zoo?): "
                       f"{FIX}")
    problem = _problem(metadata)
    if problem is not None:
        key, expected = problem
        raise ZooError(f"{origin}: {key} must be {expected}, got {short_repr(metadata[key])}: {FIX}")
    return record(**metadata)


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
