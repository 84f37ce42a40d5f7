"""Real ImageNet weights that ship in a pip package, on real photos that ship in scikit-image."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from skimage import data
from torchvision.models import ResNet50_Weights

import zoo
from finetune.data.transforms import eval_transform
from zoo.weights.loading import load_state_dict_into, resolve_state_dict

IMAGENET_CLASSES = ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
CATS = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}


@pytest.fixture(scope="module")
def efficientnet_lite0() -> torch.nn.Module:
    spec = zoo.get_spec("efficientnet_lite0")
    model = spec.build().eval()
    state_dict, origin = resolve_state_dict(spec, "default", model)
    load_state_dict_into(model, state_dict, spec, origin)
    return model


@pytest.mark.parametrize(("photo", "expected"), [("chelsea", CATS), ("coffee", {"espresso"})])
def test_efficientnet_lite0_recognises_real_photos(
    efficientnet_lite0: torch.nn.Module, photo: str, expected: set[str]
) -> None:
    spec = zoo.get_spec("efficientnet_lite0")
    image = eval_transform(spec.preprocessing)(Image.fromarray(getattr(data, photo)()))
    with torch.no_grad():
        probabilities = efficientnet_lite0(image.unsqueeze(0)).softmax(dim=1)[0]
    assert IMAGENET_CLASSES[int(probabilities.argmax())] in expected
    assert sum(probabilities[IMAGENET_CLASSES.index(name)] for name in expected) > 0.5


def test_package_checkpoint_maps_in_order_onto_timm_keys() -> None:
    spec = zoo.get_spec("efficientnet_lite0")
    state_dict, _ = resolve_state_dict(spec, "default", spec.build())
    assert len(state_dict) == 296
    assert next(iter(state_dict)) == "conv_stem.weight"
    model = zoo.create_model("efficientnet_lite0", num_classes=4, weights="default")
    assert torch.equal(model.conv_stem.weight, state_dict["conv_stem.weight"])
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 4)
