"""A grid of image files, each captioned: the images worth a look (an evaluation's top losses, suspected labels)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from finetune.results.plots import save_figure
from zoo.images import load_rgb

COLUMNS = 4
TILE = 2.6  # inches per image
TILE_PIXELS = 512  # the shorter side a huge image is reduced to near, read for its tile


def plot_image_grid(entries: Sequence[tuple[Path | Image.Image, str]], path: Path, title: str) -> None:
    """``entries`` as ``(image file or image, caption)``, row by row, each caption above its image."""
    rows = max(1, math.ceil(len(entries) / COLUMNS))
    figure = Figure(figsize=(COLUMNS * TILE, rows * (TILE + 0.5) + 0.4))
    axes = list(figure.subplots(rows, COLUMNS, squeeze=False).flat)
    for axis in axes:
        axis.set_axis_off()
    for axis, (image, caption) in zip(axes, entries, strict=False):  # the last row may have empty tiles
        axis.imshow(np.asarray(image if isinstance(image, Image.Image) else load_rgb(image, fit=TILE_PIXELS)))
        axis.set_title(caption, fontsize=8)
    figure.suptitle(title, fontsize=10)
    save_figure(figure, path)
