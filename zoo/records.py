"""What rebuilds a fine-tuned model: the ``"zoo"`` entry of a checkpoint and a bundle's ``zoo.json``, as records.

The preprocessing is ``zoo.spec.Preprocessing`` nested under ``preprocessing``; files written before it was
nested (flat ``image_size``, ``resize``, ``mean``, ``std``, ``interpolation`` and ``crop``) still load.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import ConfigDict, Field, model_validator

from zoo.schema import FieldProblem, Record, check
from zoo.spec import Preprocessing
from zoo.tta import TtaMode

# Beyond these a value comes from a damaged or hostile file, not a model: its images or head would fill memory.
MAX_SIDE = 4096  # pixels of the crop and the resize
MAX_CLASSES = 10**6
MAX_NORMALIZE, MIN_STD = 1000.0, 1e-3  # bounds of mean and std
TEMPERATURES = (1e-3, 1e3)
# The modes torchvision resizes tensor images with (box and hamming are PIL-only).
INTERPOLATIONS = ("nearest", "nearest-exact", "bilinear", "bicubic")
FIX = "correct it, or make the file again with zoo finetune or zoo export"
# The flat keys of files written before the preprocessing was nested, and their names in it.
FLAT_PREPROCESSING = {"image_size": "crop", "resize": "resize", "interpolation": "interpolation", "mean": "mean",
                      "std": "std"}


class ModelMetadata(Record):
    """What rebuilds a fine-tuned network and its preprocessing: the ``"zoo"`` entry of every checkpoint."""

    # JSON also reads NaN and Infinity: no model computes with them.
    model_config = ConfigDict(allow_inf_nan=False)

    arch: Annotated[str, Field(min_length=1)]  # a registry name such as resnet18
    classes: list[Annotated[str, Field(min_length=1)]]  # one name per output of the network
    num_classes: Annotated[int, Field(ge=1, le=MAX_CLASSES)]
    preprocessing: Preprocessing  # what the model was validated with
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    weights: str = "none"  # what training started from
    # Divides the logits before the softmax (fitted on validation, in 0.05-20): it must keep them finite.
    temperature: Annotated[float, Field(ge=TEMPERATURES[0], le=TEMPERATURES[1])] = 1.0
    tta: TtaMode = "none"  # test-time augmentation the model is used with by default (zoo.tta)
    flips_change_class: bool = False  # a mirror image is another class: flip TTA is refused

    @property
    def image_size(self) -> int:
        """The centre crop, in pixels: the side of the images the network takes."""
        return self.preprocessing.crop

    @classmethod
    def upgrade(cls, content: dict[str, Any]) -> dict[str, Any]:
        # Bundles and checkpoints exported before the nesting hold the preprocessing as flat keys (and bundles the
        # crop twice, as image_size and crop): users keep such bundles, so they are read as the nested form.
        if "preprocessing" in content or not FLAT_PREPROCESSING.keys() & content.keys():
            return content
        flat = {new: content[old] for old, new in FLAT_PREPROCESSING.items() if old in content}
        rest = {key: value for key, value in content.items() if key not in FLAT_PREPROCESSING and key != "crop"}
        return {**rest, "preprocessing": flat}

    @model_validator(mode="after")
    def _rebuilds(self) -> ModelMetadata:
        """The checks across keys, each relying on the types pydantic checked."""
        if len(self.classes) != self.num_classes:  # the wrong names for the outputs, or none at all
            raise FieldProblem("classes", f"a list of {self.num_classes} names, one per output of the network")
        if len(set(self.classes)) != len(self.classes):
            raise FieldProblem("classes", "a list of distinct names")
        check_preprocessing(self.preprocessing)
        return self


def check_preprocessing(preprocessing: Preprocessing) -> None:
    """Raise ``FieldProblem`` for a preprocessing no network can take (its types are checked already)."""
    crop, resize = preprocessing.crop, preprocessing.resize
    if not 1 <= crop <= MAX_SIDE:
        raise FieldProblem("preprocessing.crop", f"a whole number of pixels from 1 to {MAX_SIDE}")
    # Images are resized (shorter side), then centre-cropped: a resize below the crop would pad them.
    if not crop <= resize <= MAX_SIDE:
        raise FieldProblem("preprocessing.resize", f"a whole number of pixels from the crop ({crop}) to {MAX_SIDE}")
    if preprocessing.interpolation not in INTERPOLATIONS:
        raise FieldProblem("preprocessing.interpolation", f"one of {', '.join(INTERPOLATIONS)}")
    # Pixels lie in 0..1: beyond these bounds (x - mean) / std overflows float32 and every output is NaN.
    if not all(abs(value) <= MAX_NORMALIZE for value in preprocessing.mean):
        raise FieldProblem("preprocessing.mean", f"a list of 3 numbers from -{MAX_NORMALIZE} to {MAX_NORMALIZE}")
    if not all(MIN_STD <= value <= MAX_NORMALIZE for value in preprocessing.std):
        raise FieldProblem("preprocessing.std", f"a list of 3 numbers from {MIN_STD} to {MAX_NORMALIZE}")


class BundleMetadata(ModelMetadata):
    """``zoo.json``: the model's metadata, the figures measured on it, the versions that wrote it, its files."""

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
    exports: dict[str, Any] = Field(default_factory=dict)  # format -> file and max |logit difference|


def check_metadata(content: Any, origin: str, record: type[ModelMetadata] = ModelMetadata) -> ModelMetadata:
    """``content`` as a ``record`` when it rebuilds a model: every key it needs, each with a value that fits it, and
    no key the record does not know."""
    return check(record, content, origin, FIX)


def model_fields(metadata: ModelMetadata) -> dict[str, Any]:
    """The fields of ``metadata`` a ``ModelMetadata`` has (a bundle's figures and versions left out)."""
    return {name: getattr(metadata, name) for name in ModelMetadata.model_fields}

