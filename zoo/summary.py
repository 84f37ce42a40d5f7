"""The documented, stable description of an entry (``zoo list`` / ``zoo info`` JSON rows).

Keys are snake_case; error rates are percentages; unknown values are ``None``. ``params`` and
``gflops`` describe the published network (1000 ImageNet classes; small_cnn: its 10-class form).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from zoo.errors import WeightsError
from zoo.profile import profile
from zoo.spec import ArchSpec, Preprocessing, WeightsInfo

SUMMARY_KEYS = (
    "name", "family", "depth", "year", "params", "gflops", "ilsvrc_year", "ilsvrc_place",
    "ilsvrc_top5_error", "ilsvrc_models", "ilsvrc_single_model_top5_error", "imagenet_top1_error",
    "imagenet_top5_error", "default_weights", "weights_cached",
)


def summarize(spec: ArchSpec) -> dict[str, Any]:
    """One row: the entry's figures, its headline ILSVRC result and its default weights' ImageNet errors."""
    measured = profile(spec)
    ilsvrc = spec.headline_ilsvrc
    default = _default_weights(spec)
    return {
        "name": spec.name,
        "family": spec.family,
        "depth": spec.depth,
        "year": spec.year,
        "params": measured.params,
        "gflops": round(measured.gflops, 3),
        "ilsvrc_year": ilsvrc.year if ilsvrc else None,
        "ilsvrc_place": ilsvrc.place if ilsvrc else None,
        "ilsvrc_top5_error": ilsvrc.top5_error if ilsvrc else None,
        "ilsvrc_models": ilsvrc.models if ilsvrc else None,  # above 1: the figure is an ensemble's
        # One network's figure, on the row of that network only (ResNet's 4.49 is resnet152's, not resnet18's).
        "ilsvrc_single_model_top5_error":
            ilsvrc.single_model_top5_error if ilsvrc and ilsvrc.single_model == spec.name else None,
        "imagenet_top1_error": default.top1_error if default else None,
        "imagenet_top5_error": default.top5_error if default else None,
        "default_weights": default.tag if default else None,
        "weights_cached": default.cached if default else None,
    }


def describe(spec: ArchSpec) -> dict[str, Any]:
    """Everything known of an entry: the summary row plus input settings, results, weights and stages.

    ``preprocessing`` is the default weights' own (torchvision's ``transforms()``, timm's data config), or the
    entry's when it has no weights; ``input_size``, ``mean``, ``std`` and ``interpolation`` are the entry's.
    """
    measured = profile(spec)
    default = _default_weights(spec)
    return {
        **summarize(spec),
        "description": spec.description,
        "head": spec.head,
        "heads": list(spec.heads),
        "preprocessing": {"weights": default.tag if default else None,
                          **_preprocessing(default.preprocessing if default and default.preprocessing
                                           else spec.preprocessing)},
        "input_size": spec.input_size,
        "min_input_size": spec.min_input_size,
        "mean": list(spec.mean),
        "std": list(spec.std),
        "interpolation": spec.interpolation,
        "ilsvrc_results": [asdict(result) for result in spec.ilsvrc],
        "weights": [
            {
                "tag": info.tag,
                "imagenet_top1_error": info.top1_error,
                "imagenet_top5_error": info.top5_error,
                "cached": info.cached,
                "path": str(info.path),
                "url": info.url,
                **_preprocessing(info.preprocessing or spec.preprocessing),
            }
            for info in (spec.weights.available() if spec.weights else ())
        ],
        "stages": [
            {"name": s.name, "kind": s.kind, "output_shape": list(s.output_shape), "params": s.params}
            for s in measured.stages
        ],
    }


def _preprocessing(preprocessing: Preprocessing) -> dict[str, Any]:
    return {"resize": preprocessing.resize, "crop": preprocessing.crop, "interpolation": preprocessing.interpolation,
            "mean": list(preprocessing.mean), "std": list(preprocessing.std)}


def _default_weights(spec: ArchSpec) -> WeightsInfo | None:
    if spec.weights is None:
        return None
    infos = {info.tag: info for info in spec.weights.available()}
    try:
        return infos.get(spec.weights.default_tag)
    except WeightsError:  # a timm model without weights on the hub, or whose default is not there
        return None
