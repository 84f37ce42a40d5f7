"""The registry's entries against the real networks and torchvision's published metadata."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import zoo
from zoo.registry import Registry
from zoo.spec import ArchSpec

CLASSIC = zoo.list_models()
TORCHVISION = [name for name in CLASSIC if name not in {"small_cnn", "efficientnet_lite0"}]


def test_registry_names_are_exact() -> None:
    assert CLASSIC == [
        "alexnet", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn",
        "googlenet", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "small_cnn", "efficientnet_lite0",
    ]
    assert zoo.list_models("resnet1*") == ["resnet18", "resnet101", "resnet152"]


def test_public_names_are_all_listed_and_load() -> None:
    # zoo.__all__ is written out for linters and `from zoo import *`; it must name exactly what zoo serves lazily.
    assert sorted(zoo.__all__) == sorted(zoo._HOMES)
    assert all(getattr(zoo, name) is not None for name in zoo.__all__)


@pytest.mark.parametrize("name", CLASSIC)
def test_create_model_replaces_head_and_runs(name: str) -> None:
    # On the meta device: the wiring and every shape, without the seconds VGG's random init of 120M weights takes.
    spec = zoo.get_spec(name)
    with torch.device("meta"):
        model = zoo.create_model(name, num_classes=3, dropout=0.3)
        head = model.get_submodule(spec.head)
        assert isinstance(head, zoo.ClassifierHead)
        assert head.dropout.p == 0.3
        assert head.linear.out_features == 3
        size = max(spec.min_input_size, 32)
        model.train()  # GoogLeNet must give a plain tensor in training mode too
        out = model(torch.randn(2, 3, size, size))
    assert isinstance(out, torch.Tensor)
    assert out.shape == (2, 3)


@pytest.mark.parametrize("name", ["small_cnn", "resnet18", "googlenet", "efficientnet_lite0"])
def test_a_created_model_gives_finite_class_scores(name: str) -> None:
    torch.manual_seed(0)
    model = zoo.create_model(name, num_classes=3, dropout=0.3).train()
    size = max(zoo.get_spec(name).min_input_size, 32)
    out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, 3)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", CLASSIC)
def test_head_path_is_a_linear_layer(name: str) -> None:
    spec = zoo.get_spec(name)
    with torch.device("meta"):
        assert isinstance(spec.build().get_submodule(spec.head), nn.Linear)


@pytest.mark.parametrize("name", TORCHVISION)
def test_derived_figures_match_torchvision_metadata(name: str) -> None:
    from torchvision.models import get_model_weights

    meta = get_model_weights(name).DEFAULT.meta
    row = zoo.summarize(zoo.get_spec(name))
    assert row["params"] == meta["num_params"]
    assert row["gflops"] == pytest.approx(2 * meta["_ops"], rel=0.01)
    metrics = meta["_metrics"]["ImageNet-1K"]
    assert row["imagenet_top1_error"] == pytest.approx(100 - metrics["acc@1"])
    assert row["imagenet_top5_error"] == pytest.approx(100 - metrics["acc@5"])


def _weighted_layers(model: nn.Module, skip: str = "\0") -> int:
    return sum(
        isinstance(m, (nn.Conv2d, nn.Linear)) and skip not in name for name, m in model.named_modules()
    )


@pytest.mark.parametrize("name", [n for n in TORCHVISION if n != "googlenet"] + ["small_cnn", "efficientnet_lite0"])
def test_typed_depth_counts_the_weighted_layers(name: str) -> None:
    spec = zoo.get_spec(name)
    with torch.device("meta"):
        model = spec.build()
    # The ResNet paper does not count the 1×1 projection shortcuts.
    assert _weighted_layers(model, skip="downsample") == spec.depth


def test_published_ilsvrc_results() -> None:
    alexnet = zoo.get_spec("alexnet")
    assert [r.top5_error for r in alexnet.ilsvrc] == [16.4, 15.3]
    headline = {n: zoo.get_spec(n).headline_ilsvrc for n in ("vgg16", "googlenet", "resnet152")}
    assert {n: (r.year, r.place, r.top5_error) for n, r in headline.items()} == {
        "vgg16": (2014, 2, 7.3), "googlenet": (2014, 1, 6.67), "resnet152": (2015, 1, 3.57),
    }


def test_unknown_name_lists_closest_names() -> None:
    with pytest.raises(zoo.UnknownModelError, match=r"unknown architecture 'resnet5'.*resnet50"):
        zoo.get_spec("resnet5")


def test_registering_a_name_twice_is_an_error() -> None:
    spec = zoo.get_spec("small_cnn")
    registry = Registry([spec])
    with pytest.raises(ValueError, match="already registered"):
        registry.register(spec)


def test_small_cnn_accepts_any_size_from_28_px() -> None:
    model = zoo.create_model("small_cnn", num_classes=4).eval()
    for size in (28, 45, 96):
        assert model(torch.randn(1, 3, size, size)).shape == (1, 4)


def test_timm_models_are_reachable_by_name() -> None:
    spec = zoo.get_spec("timm/resnet10t")
    assert isinstance(spec, ArchSpec)
    assert spec.head == "fc"
    assert spec.depth > 10
    model = zoo.create_model("timm/resnet10t", num_classes=5)
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 5)
    with pytest.raises(zoo.UnknownModelError, match="timm/resnet10x"):
        zoo.get_spec("timm/resnet10x")


def test_create_model_takes_weights_none_as_the_command_line_does() -> None:
    torch.manual_seed(0)
    model = zoo.create_model("resnet18", weights="none")  # no num_classes: the published 1,000-class head
    assert model.fc.out_features == 1000
    assert zoo.create_model("small_cnn", num_classes=4, weights="none")(torch.zeros(1, 3, 28, 28)).shape == (1, 4)
