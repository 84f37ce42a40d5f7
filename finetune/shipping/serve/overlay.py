"""The page's Grad-CAM overlay: where the model looked for a class, drawn over the uploaded image.

It is ``zoo explain``'s map (``finetune.inspection.saliency``) at ``zoo explain``'s default layer, the last
convolutional stage, and in its colours; the image is scaled down first, so a phone photo answers with a small PNG.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image

from finetune.inspection.saliency import class_activation_map, crop_box, on_image
from finetune.inspection.stages import run
from zoo.bundle import LoadedModel

LONGEST_SIDE = 512  # pixels of the overlay
OPACITY = 0.45  # of the heat map over the image, as in zoo explain's picture


@dataclass(frozen=True)
class Overlay:
    class_index: int
    probability: float
    png: bytes

    def data_url(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


def default_layer(model: LoadedModel) -> str | None:
    """The last convolutional stage, read off one forward pass (as ``zoo explain`` does); None without one."""
    size = model.metadata.image_size
    stages = run(model.network, torch.zeros(1, 3, size, size, device=model.device)).stages
    return stages[-1].name if stages else None


def overlay(model: LoadedModel, layer: str, image: Image.Image, target: int | None) -> Overlay:
    """Grad-CAM of class ``target`` (None: the top-1 class) at ``layer``, over ``image``, as a PNG."""
    batch = model.transform(image).unsqueeze(0)
    probabilities = model.predict_proba(batch)[0]
    target = int(probabilities.argmax()) if target is None else target
    heat = class_activation_map(model.network, model.network.get_submodule(layer), batch.to(model.device), target)
    width, height = image.size
    scale = min(1.0, LONGEST_SIDE / max(width, height))
    shown = image.resize((max(1, round(width * scale)), max(1, round(height * scale))), Image.Resampling.BILINEAR)
    left, top, right, bottom = crop_box(width, height, model.metadata.preprocessing.resize, model.metadata.image_size)
    placed = on_image(heat, shown.width, shown.height, (left * scale, top * scale, right * scale, bottom * scale))
    colours = colormaps["jet"](placed)[..., :3]
    blended = (1 - OPACITY) * np.asarray(shown, dtype=np.float32) / 255 + OPACITY * colours
    png = io.BytesIO()
    Image.fromarray(np.clip(np.rint(blended * 255), 0, 255).astype(np.uint8)).save(png, "PNG")
    return Overlay(target, round(float(probabilities[target]), 6), png.getvalue())
