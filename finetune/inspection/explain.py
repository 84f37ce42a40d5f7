"""``zoo explain``: what a model looks at in each image, and what its layers respond to.

For each image: a class activation map (``<stem>.gradcam.png`` and, at the image's own size, ``.gradcam.npy``)
for the top-1 class or a chosen one, and the most active channels of every stage (``.feature_maps.png``). Once:
the first convolution's kernels (``filters.png``) and ``explain.json``; an unreadable image is skipped and listed
there, as ``zoo predict`` does. A huge image is reduced as it is read (``zoo.images.load_rgb``), and its heat map
is at that size. Images go through the model's own
preprocessing (resize, centre crop), so the predictions are ``zoo predict``'s; the heat map is 0 outside the crop.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from finetune.inspection.explain_figures import first_convolution, plot_feature_maps, plot_filters, plot_heat_map
from finetune.inspection.saliency import check_method, class_activation_map, crop_box, on_image
from finetune.inspection.settings import ExplainSettings
from finetune.inspection.stages import run
from finetune.runtime.folders import check_out_folder
from finetune.shipping.predict import image_paths, read_image
from finetune.shipping.pretrained import load_model
from zoo._io import write_atomic, write_text_atomic
from zoo.bundle import LoadedModel
from zoo.errors import ZooError

FILTERS_FILE = "filters.png"
REPORT_FILE = "explain.json"


@dataclass(frozen=True)
class Explanation:
    """One image: its top-k predictions, the class explained, the layer looked at, and the files written."""

    path: Path
    predictions: list[tuple[str, float]]
    target: str
    target_probability: float
    layer: str
    crop: tuple[float, float, float, float]
    stem: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "predictions": [{"class": name, "probability": probability} for name, probability in self.predictions],
            "target_class": self.target, "target_probability": self.target_probability, "layer": self.layer,
            "crop": [round(value, 2) for value in self.crop],
            "files": [f"{self.stem}.gradcam.png", f"{self.stem}.gradcam.npy", f"{self.stem}.feature_maps.png"],
        }


@dataclass(frozen=True)
class ExplainResult:
    out_dir: Path
    method: str
    explanations: list[Explanation]
    filters: bool  # whether filters.png was written (the network has a first convolution over RGB)
    skipped: list[tuple[Path, str]]  # the images that could not be read, and why


def unique_stems(paths: Sequence[Path]) -> list[str]:
    """File stems for the outputs, numbered when two images share one (``a/cat.jpg``, ``b/cat.jpg``)."""
    stems: list[str] = []
    for path in paths:
        stem, number = path.stem, 1
        while stem in stems:
            number += 1
            stem = f"{path.stem}-{number}"
        stems.append(stem)
    return stems


def class_index(classes: Sequence[str], name: str) -> int:
    if name in classes:
        return list(classes).index(name)
    close = difflib.get_close_matches(name, classes, n=5, cutoff=0.5)
    known = f"closest: {', '.join(close)}" if close else (
        f"the model's classes: {', '.join(classes)}" if len(classes) <= 20 else f"the model has {len(classes)} classes")
    raise ZooError(f"unknown class '{name}' for --class ({known}): give one of the model's class names")


def explain(source: str | Path, images: Sequence[Path], out: Path, method: str = ExplainSettings.method,
            class_name: str | None = ExplainSettings.class_name, layer: str | None = ExplainSettings.layer,
            top_k: int = ExplainSettings.top_k) -> ExplainResult:
    """Explain the predictions of ``source`` (run folder, ``.ckpt``, bundle or registry name) on ``images``."""
    check_method(method)
    if top_k < 1:
        raise ZooError(f"--top-k must be at least 1, got {top_k}")
    out = Path(out)
    check_out_folder(out)  # before the model is loaded and the images read
    paths = image_paths(images)
    model = load_model(source).model
    # As zoo predict: an unreadable image is skipped and reported, the others explained.
    read = [(path, read_image(model, path)) for path in paths]
    skipped = [(path, picture) for path, picture in read if isinstance(picture, str)]
    pictures = [(path, picture) for path, picture in read if not isinstance(picture, str)]
    if not pictures:
        path, reason = skipped[0]
        more = f" (and {len(skipped) - 1} more unreadable)" if len(skipped) > 1 else ""
        raise ZooError(f"cannot read image {path}: {reason}{more}; pass image files (.jpg, .png, …) or folders of "
                       "them")
    network = model.network
    modules = dict(network.named_modules())
    if layer is not None and layer not in modules:
        close = difflib.get_close_matches(layer, [name for name in modules if name], n=5, cutoff=0.5)
        hint = f"closest: {', '.join(close)}; " if close else ""
        raise ZooError(f"no layer '{layer}' in {model.metadata.arch} for --layer ({hint}every name: zoo info "
                       f"{model.metadata.arch} --layers)")
    target = None if class_name is None else class_index(model.classes, class_name)
    out.mkdir(parents=True, exist_ok=True)
    explanations = [
        _explain_one(model, path, picture, stem, out, method, target, layer, top_k)
        for (path, picture), stem in zip(pictures, unique_stems([path for path, _ in pictures]), strict=True)
    ]
    first = first_convolution(network)
    if first is not None:
        plot_filters(first[0], first[1].weight, out / FILTERS_FILE)
    report = {"source": str(source), "arch": model.metadata.arch, "method": method,
              "images": [explanation.to_dict() for explanation in explanations],
              "skipped": [{"path": str(path), "error": reason} for path, reason in skipped],
              "filters": FILTERS_FILE if first is not None else None}
    write_text_atomic(out / REPORT_FILE, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return ExplainResult(out, method, explanations, first is not None, skipped)


def _explain_one(model: LoadedModel, path: Path, picture: Image.Image, stem: str, out: Path, method: str,
                 target: int | None, layer: str | None, top_k: int) -> Explanation:
    batch = model.transform(picture).unsqueeze(0).to(model.device)
    forward = run(model.network, batch, [layer] if layer else [])
    arch = model.metadata.arch
    if layer is None:
        if not forward.stages:
            raise ZooError(f"{arch} has no convolutional stage for a class activation map: name a layer with --layer "
                           f"(see zoo info {arch} --layers)")
        layer = forward.stages[-1].name
    elif layer not in forward.outputs or forward.outputs[layer].dim() != 4:
        what = (f"outputs {list(forward.outputs[layer].shape[1:])}, not a feature map" if layer in forward.outputs
                else "is not run by the network's forward pass")
        default = forward.stages[-1].name if forward.stages else "a convolutional layer"
        raise ZooError(f"--layer {layer} {what}: choose a convolutional layer or stage, such as {default}")
    probabilities = (forward.logits / model.temperature).softmax(dim=1)[0]
    values, indices = probabilities.topk(min(top_k, len(model.classes)))
    target = int(indices[0]) if target is None else target
    heat = class_activation_map(model.network, model.network.get_submodule(layer), batch, target, method)
    width, height = picture.size
    box = crop_box(width, height, model.metadata.preprocessing.resize, model.metadata.image_size)
    heat = on_image(heat, width, height, box)
    write_atomic(out / f"{stem}.gradcam.npy", lambda temporary: np.save(temporary, heat))
    name, probability = model.classes[target], round(float(probabilities[target]), 6)
    plot_heat_map(picture, heat, box, out / f"{stem}.gradcam.png",
                  f"{path.name}: {method} of '{name}' (p = {probability:.3f}) at {layer}")
    if forward.stages:
        plot_feature_maps(forward.stages, out / f"{stem}.feature_maps.png", f"{path.name}, {arch}")
    predictions = [(model.classes[int(i)], round(float(v), 6)) for v, i in zip(values, indices, strict=True)]
    return Explanation(path, predictions, name, probability, layer, box, stem)
