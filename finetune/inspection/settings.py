"""The settings of ``zoo explain`` and ``zoo clean``, free of torch: the CLI makes its flags from them and the
functions take their defaults from them."""

from __future__ import annotations

from dataclasses import dataclass

from finetune.config import option


@dataclass(frozen=True)
class ExplainSettings:
    """How ``explain`` looks at a model's predictions."""

    method: str = option("gradcam", "gradcam (default), gradcam++, scorecam (slow: a forward pass per channel) or "
                                    "eigencam (class-agnostic)", metavar="METHOD")
    class_name: str | None = option(None, "the class to explain (default: each image's top-1 prediction)",
                                    flag="--class", metavar="NAME")
    layer: str | None = option(None, "the layer to look at (default: the last convolutional stage; every name: zoo "
                                     "info ARCH --layers)", metavar="NAME")
    top_k: int = option(5, "predictions per image in explain.json")


@dataclass(frozen=True)
class CleanSettings:
    """How ``clean`` finds label issues and near-duplicates."""

    arch: str = option("efficientnet_lite0", "pretrained backbone whose features the linear heads learn from "
                                             "(default: efficientnet_lite0)")
    folds: int = option(5, "K of the K-fold training of the linear heads (default: 5)")
    image_size: int | None = option(None, "input size (default: the architecture's)", metavar="PX")
    batch_size: int = option(64, "")
    similarity: float = option(0.97, "cosine similarity of features from which two images are near-duplicates "
                                     "(default: 0.97)", metavar="COSINE")
    shown: int = option(16, "suspects shown in label_issues.png", flag="--show", metavar="N")
