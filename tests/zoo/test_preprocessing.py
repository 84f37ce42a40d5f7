"""Preprocessing belongs to the weights: torchvision's own transforms per weight, the entry's for no weights."""

from __future__ import annotations

from pathlib import Path

import pytest

import zoo
from zoo.spec import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from zoo.weights.loading import weights_preprocessing


@pytest.mark.parametrize(("name", "weights", "resize"), [
    ("resnet50", "default", 232),  # IMAGENET1K_V2, trained with torchvision's newer recipe
    ("resnet50", "IMAGENET1K_V1", 256),
    ("resnet152", "default", 232),
    ("resnet18", "default", 256),  # only V1 weights
    ("resnet50", None, 256),  # from scratch: the entry's own 224 / 0.875
])
def test_torchvision_weights_bring_their_resize(name: str, weights: str | None, resize: int) -> None:
    fraction = 0.875 if weights is None else None  # the entry's own resize is ⌊crop / 0.875⌋ at any crop
    assert weights_preprocessing(zoo.get_spec(name), weights) == Preprocessing(224, resize, "bilinear", IMAGENET_MEAN,
                                                                                IMAGENET_STD, fraction)


def test_a_weights_file_gets_the_entrys_own_preprocessing(tmp_path: Path) -> None:
    path = tmp_path / "mine.pth"
    path.touch()
    assert weights_preprocessing(zoo.get_spec("resnet50"), str(path)).resize == 256


def test_preprocessing_at_another_crop_keeps_the_weights_ratio() -> None:
    v2 = weights_preprocessing(zoo.get_spec("resnet50"), "default")
    assert v2.at(224) is v2
    # ⌊crop × 232 / 224⌋: 112 → 116 exactly, 160 → ⌊165.71⌋ = 165, 32 → ⌊33.14⌋ = 33.
    assert [(v2.at(crop).crop, v2.at(crop).resize) for crop in (112, 160, 32)] == [(112, 116), (160, 165), (32, 33)]
    assert v2.at(160).mean == IMAGENET_MEAN
    assert v2.at(160).interpolation == "bilinear"


def test_zoo_info_shows_the_default_weights_preprocessing() -> None:
    details = zoo.describe(zoo.get_spec("resnet50"))
    assert details["preprocessing"]["weights"] == "IMAGENET1K_V2"
    assert (details["preprocessing"]["resize"], details["preprocessing"]["crop"]) == (232, 224)
    assert {row["tag"]: row["resize"] for row in details["weights"]} == {"IMAGENET1K_V1": 256, "IMAGENET1K_V2": 232}
    # Weights that publish no preprocessing (a pip package's) and entries without weights show the entry's own.
    lite = zoo.describe(zoo.get_spec("efficientnet_lite0"))["preprocessing"]
    assert lite == {"weights": "IMAGENET1K", "resize": 256, "crop": 224, "interpolation": "bicubic",
                    "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
    small = zoo.describe(zoo.get_spec("small_cnn"))["preprocessing"]
    assert (small["weights"], small["resize"], small["crop"]) == (None, 32, 28)
