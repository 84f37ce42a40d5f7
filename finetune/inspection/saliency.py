"""Class activation maps (the ``grad-cam`` package) and where they lie on the image the model was shown.

Grad-CAM (Selvaraju et al. 2017) weights a layer's feature maps by the gradient of one class's score, Grad-CAM++
(Chattopadhay et al. 2018) by higher-order terms, Score-CAM (Wang et al. 2020) by the score each map earns as a
mask (one forward pass per channel: slow on a CPU), and Eigen-CAM (Muhammad & Yeasin 2020) takes the maps' first
principal component, the same for every class.
"""

from __future__ import annotations

import difflib

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from zoo.errors import ZooError

METHODS = ("gradcam", "gradcam++", "scorecam", "eigencam")
SCORECAM_BATCH = 32  # masked images per forward pass


def check_method(method: str) -> None:
    if method not in METHODS:
        close = difflib.get_close_matches(method, METHODS, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ZooError(f"unknown --method '{method}'{hint}: choose one of {', '.join(METHODS)}")


def class_activation_map(network: nn.Module, layer: nn.Module, image: Tensor, class_index: int,
                         method: str = "gradcam") -> np.ndarray:
    """The ``method``'s map of ``class_index`` at ``layer`` for a ``1×3×H×W`` image: ``H×W`` in [0, 1]."""
    from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, ScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    check_method(method)
    kinds = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "scorecam": ScoreCAM, "eigencam": EigenCAM}
    cam = kinds[method](model=network, target_layers=[layer])
    cam.batch_size = SCORECAM_BATCH  # read by Score-CAM only
    try:
        # Not "with cam": its __exit__ prints and swallows an IndexError.
        with torch.enable_grad():
            return cam(input_tensor=image, targets=[ClassifierOutputTarget(class_index)])[0].astype(np.float32)
    finally:
        cam.activations_and_grads.release()


def crop_box(width: int, height: int, resize: int, crop: int) -> tuple[float, float, float, float]:
    """The centre crop the model sees, as (left, top, right, bottom) in the image's own pixels.

    The evaluation transform resizes the shorter side to ``resize`` (the longer one rounded down, as
    torchvision does) and crops ``crop × crop`` from the centre.
    """
    if width <= height:
        resized_width, resized_height = resize, int(resize * height / width)
    else:
        resized_width, resized_height = int(resize * width / height), resize
    top, left = round((resized_height - crop) / 2), round((resized_width - crop) / 2)
    scale_x, scale_y = width / resized_width, height / resized_height
    return left * scale_x, top * scale_y, (left + crop) * scale_x, (top + crop) * scale_y


def on_image(heat: np.ndarray, width: int, height: int, box: tuple[float, float, float, float]) -> np.ndarray:
    """``heat`` (over the crop) at the image's own size ``height × width``; 0 where the model saw nothing."""
    left, top, right, bottom = (round(value) for value in box)
    left, top, right, bottom = max(left, 0), max(top, 0), min(right, width), min(bottom, height)
    placed = np.zeros((height, width), dtype=np.float32)
    resized = Image.fromarray(heat.astype(np.float32)).resize((right - left, bottom - top), Image.Resampling.BILINEAR)
    placed[top:bottom, left:right] = np.clip(np.asarray(resized), 0.0, 1.0)
    return placed
