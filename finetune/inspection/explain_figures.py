"""The pictures of ``zoo explain``: a heat map over the image, each stage's most active channels, the first filters."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image
from torch import Tensor, nn

from finetune.inspection.stages import Stage
from finetune.results.plots import save_figure

CHANNELS_SHOWN = 8  # per stage
FILTER_COLUMNS = 16
LONGEST_SIDE = 7.0  # inches of the heat-map figure


def plot_heat_map(image: Image.Image, heat: np.ndarray, box: tuple[float, float, float, float], path: Path,
                  title: str) -> None:
    """``heat`` (``H×W``, in [0, 1]) over ``image``; a dashed frame marks the centre crop unless it is all of it."""
    width, height = image.size
    scale = LONGEST_SIDE / max(width, height)
    figure = Figure(figsize=(width * scale + 1.2, height * scale + 0.6))
    axis = figure.subplots()
    axis.imshow(np.asarray(image))
    shown = axis.imshow(heat, cmap="jet", alpha=0.45, vmin=0.0, vmax=1.0)
    left, top, right, bottom = box
    if left > 0.5 or top > 0.5 or right < width - 0.5 or bottom < height - 0.5:
        axis.add_patch(Rectangle((left - 0.5, top - 0.5), right - left, bottom - top, fill=False, linestyle="--",
                                 linewidth=1.5, edgecolor="white"))
    axis.set_axis_off()
    axis.set_title(title, fontsize=10)
    figure.colorbar(shown, ax=axis, fraction=0.046, pad=0.04, label="relevance")
    save_figure(figure, path)


def plot_feature_maps(stages: Sequence[Stage], path: Path, title: str) -> None:
    """Per stage (a row titled with its name and output size), its most active channels for this image (highest
    mean activation), on one colour scale per row."""
    figure = Figure(figsize=(CHANNELS_SHOWN * 1.3 + 1.0, len(stages) * 1.5 + 0.6))
    for row, stage in zip(figure.subplots(len(stages), CHANNELS_SHOWN, squeeze=False), stages, strict=True):
        channels, height, width = stage.activations.shape
        chosen = stage.activations.mean(dim=(1, 2)).argsort(descending=True)[:CHANNELS_SHOWN].tolist()
        maps = stage.activations[chosen].numpy()
        for axis in row:
            axis.set(xticks=[], yticks=[])
            axis.set_frame_on(False)
        for axis, channel, activation in zip(row, chosen, maps, strict=False):  # a stage may have fewer channels
            axis.imshow(activation, cmap="viridis", vmin=float(maps.min()), vmax=float(maps.max()))
            axis.set_title(f"channel {channel}", fontsize=7)
        row[0].set_ylabel(f"{stage.name}\n{channels}×{height}×{width}", fontsize=8)
    figure.suptitle(f"{title}: each stage's {CHANNELS_SHOWN} most active channels (C×H×W: the stage's output)",
                    fontsize=10)
    save_figure(figure, path)


def first_convolution(network: nn.Module) -> tuple[str, nn.Conv2d] | None:
    """The network's first convolution over the RGB image, when it has one."""
    for name, module in network.named_modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == 3 and module.groups == 1:
            return name, module
    return None


def plot_filters(name: str, weight: Tensor, path: Path) -> None:
    """Each kernel of a first convolution (``O×3×kh×kw``) as a colour tile, scaled to its own range."""
    kernels = weight.detach().float().cpu().numpy().transpose(0, 2, 3, 1)  # O×kh×kw×3
    low = kernels.min(axis=(1, 2, 3), keepdims=True)
    high = kernels.max(axis=(1, 2, 3), keepdims=True)
    tiles = (kernels - low) / np.maximum(high - low, 1e-12)
    count = len(tiles)
    columns = min(count, FILTER_COLUMNS)
    rows = math.ceil(count / columns)
    figure = Figure(figsize=(columns * 0.7 + 0.4, rows * 0.7 + 0.8))
    for index, axis in enumerate(figure.subplots(rows, columns, squeeze=False).flat):
        axis.set_axis_off()
        if index < count:
            axis.imshow(tiles[index], interpolation="nearest")
    kernel_height, kernel_width = weight.shape[-2:]
    figure.suptitle(f"{name}: {count} filters of {kernel_height}×{kernel_width}×3 (RGB), each scaled to its own "
                    "range", fontsize=10)
    save_figure(figure, path)
