"""Images as zoo feeds them to a network: any file or mode as 8-bit RGB, and evaluation preprocessing."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

# Full-scale value of each high-bit mode. Mode "I" is 32-bit, but in image files it holds 16-bit PNG or
# TIFF data; float ("F") images conventionally span 0..1.
FULL_SCALE = {"I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535, "I": 65535, "F": 1.0}
ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
WHITE = (255, 255, 255, 255)


def load_rgb(path: Path) -> Image.Image:
    """Open ``path`` as 8-bit RGB: EXIF rotation applied, high-bit images scaled, transparency on white."""
    with Image.open(path) as image:
        image.load()
        # Phone photos store their rotation in EXIF; without it the network sees them sideways.
        return to_rgb(ImageOps.exif_transpose(image))


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert an image of any mode to 8-bit RGB (see ``load_rgb``)."""
    if image.mode in FULL_SCALE:
        # A plain convert clips 16-bit values at 255, turning most of the image white.
        levels = np.asarray(image, dtype=np.float64) * (255 / FULL_SCALE[image.mode])
        return Image.fromarray(np.clip(np.rint(levels), 0, 255).astype(np.uint8)).convert("RGB")
    if image.mode in ALPHA_MODES or "transparency" in image.info:
        # Transparent pixels keep whatever colour the encoder left there (often black); composite them on
        # white, the background viewers show, instead of letting that colour through as a plain convert does.
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, WHITE), rgba).convert("RGB")
    return image.convert("RGB")


def center_crop_transform(
    resize: int, crop: int, interpolation: str, mean: Sequence[float], std: Sequence[float]
) -> Callable[[Image.Image], Tensor]:
    """Evaluation preprocessing: shorter side to ``resize``, centre crop ``crop``, float, normalise."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import v2 as T

    return T.Compose([
        T.ToImage(),
        T.Resize(resize, interpolation=InterpolationMode(interpolation), antialias=True),
        T.CenterCrop(crop),
        T.ToDtype(torch.float32, scale=True),
        T.Normalize(list(mean), list(std)),
    ])
