"""Calibrated softmax: one temperature fitted on validation logits (Guo et al. 2017), ECE and its diagram.

A network's softmax is usually over-confident; dividing its logits by one temperature T > 1, chosen to
minimise the validation negative log-likelihood, fixes most of that without changing any prediction. The fit is
made whatever the validation error: with every image right the likelihood still depends on T (T < 1 sharpens).
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from scipy.optimize import minimize_scalar
from torch import Tensor
from torch.nn import functional as F
from torchmetrics.functional.classification import multiclass_calibration_error

from finetune.results.stats import wilson_interval

if TYPE_CHECKING:
    from matplotlib.figure import Figure

ECE_BINS = 15
FEW_IMAGES = 10  # a bin with fewer images is drawn faded: its accuracy is hardly known
TITLE_CHARACTERS = 70  # of the title at 10 pt that fit the 6-inch figure
# The temperature is sought in this range. Every validation image right leaves the likelihood rising as T falls
# to 0: the fit then stops at the lower bound, sharpening a softmax that was under-confident on images it got right.
TEMPERATURE_RANGE = (0.05, 20.0)
NOISE_DRAWS = 200  # simulated label draws behind the ECE a perfectly calibrated model shows on as many images


def negative_log_likelihood(logits: Tensor, labels: Tensor, temperature: float = 1.0) -> float:
    """Mean cross-entropy of ``logits / temperature``."""
    return F.cross_entropy(logits.float() / temperature, labels).item()


def fit_temperature(logits: Tensor, labels: Tensor) -> float:
    """The temperature in ``TEMPERATURE_RANGE`` that minimises the NLL of ``logits`` (bounded Brent search on log T,
    scipy); 1 when the logits are not finite."""
    logits = logits.detach().float()
    if not torch.isfinite(logits).all():  # a diverged run: nothing to calibrate
        return 1.0
    low, high = (math.log(bound) for bound in TEMPERATURE_RANGE)
    found = minimize_scalar(lambda log_t: negative_log_likelihood(logits, labels, math.exp(log_t)),
                            bounds=(low, high), method="bounded", options={"xatol": 1e-4})
    temperature = math.exp(float(found.x))
    # Never a temperature worse than none (a flat likelihood can stop the search anywhere).
    if negative_log_likelihood(logits, labels, temperature) > negative_log_likelihood(logits, labels):
        return 1.0
    return temperature


def calibration_error(probabilities: Tensor, labels: Tensor) -> float:
    """Expected calibration error in percent (15 equal-width confidence bins, torchmetrics)."""
    num_classes = probabilities.shape[1]
    return 100.0 * multiclass_calibration_error(probabilities.float(), labels, num_classes, n_bins=ECE_BINS,
                                                norm="l1").item()


def calibration_noise(probabilities: Tensor, draws: int = NOISE_DRAWS, seed: int = 0) -> float:
    """The ECE (percent) that a perfectly calibrated model with these top-1 probabilities shows on as many images:
    the mean over ``draws`` simulated label sets, each prediction right with its own probability.

    ECE's bins hold few images on a small set, so it sits above 0 even for a calibrated model (one image at
    confidence 0.5 scores 50 points whatever happens); a measured ECE near this floor is the sample, not the model.
    """
    confidence, predicted = probabilities.float().max(dim=1)
    generator = torch.Generator().manual_seed(seed)
    other = (predicted + 1) % probabilities.shape[1]  # any class but the predicted one: a wrong answer
    errors = [calibration_error(probabilities, torch.where(
        torch.rand(confidence.shape, generator=generator) < confidence, predicted, other)) for _ in range(draws)]
    return float(np.mean(errors))


def plot_reliability(probabilities: Tensor, labels: Tensor, path: Path, title: str) -> None:
    """Write the reliability diagram of ``reliability_figure`` to ``path``."""
    from finetune.results.plots import save_figure

    save_figure(reliability_figure(probabilities, labels, title), path)


def reliability_figure(probabilities: Tensor, labels: Tensor, title: str) -> Figure:
    """Reliability diagram: accuracy against confidence per bin with its 95% interval, the diagonal as perfect
    calibration; bins of fewer than ``FEW_IMAGES`` images faded."""
    from matplotlib.figure import Figure

    confidence, predicted = probabilities.float().max(dim=1)
    correct = (predicted == labels).float()
    edges = torch.linspace(0, 1, ECE_BINS + 1)
    bins = torch.bucketize(confidence, edges[1:-1], right=True)
    counts = torch.bincount(bins, minlength=ECE_BINS)
    accuracy = torch.bincount(bins, weights=correct, minlength=ECE_BINS) / counts.clamp(min=1)
    mean_confidence = torch.bincount(bins, weights=confidence, minlength=ECE_BINS) / counts.clamp(min=1)
    # matplotlib takes numpy arrays; tensors go through a deprecated conversion.
    shown, accurate = counts.numpy(), accuracy.numpy()
    centres = ((edges[:-1] + edges[1:]) / 2).numpy()
    gap = (mean_confidence - accuracy).numpy()
    # A bin of a few images says little about its accuracy: drawn faded, and every bin carries its 95% interval.
    sure = shown >= FEW_IMAGES
    few = (shown > 0) & ~sure
    intervals = [wilson_interval(int(n - round(a * n)), int(n)) if n else (0.0, 0.0)
                 for n, a in zip(shown.tolist(), accurate.tolist(), strict=True)]
    low = np.array([1 - high / 100 for _, high in intervals])
    high = np.array([1 - low_error / 100 for low_error, _ in intervals])
    width = 1.0 / ECE_BINS
    figure = Figure(figsize=(6, 7))
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    top.bar(centres[sure], accurate[sure], width=width, edgecolor="black", color="tab:blue", label="accuracy")
    top.bar(centres[few], accurate[few], width=width, edgecolor="black", color="tab:blue", alpha=0.25, hatch="//",
            label=f"accuracy, bin of under {FEW_IMAGES} images")
    top.bar(centres[sure], gap[sure], bottom=accurate[sure], width=width,
            color="tab:red", alpha=0.3, edgecolor="tab:red", label="gap to mean confidence")
    filled = shown > 0
    top.errorbar(centres[filled], accurate[filled],
                 yerr=[(accurate - low)[filled].clip(min=0), (high - accurate)[filled].clip(min=0)],
                 fmt="none", ecolor="black", capsize=2, linewidth=1, label="95% interval (Wilson)")
    top.plot([0, 1], [0, 1], linestyle="--", color="gray", label="perfect calibration")
    top.set(ylabel="accuracy", xlim=(0, 1), ylim=(0, 1),
            title=f"ECE {calibration_error(probabilities, labels):.2f}% over {len(labels)} images ({ECE_BINS} bins)")
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(centres, shown, width=width, color="tab:gray", edgecolor="black")
    bottom.set(xlabel="confidence (top-1 probability)", ylabel="images")
    # Wrapped to the figure's width: a run's name and data folder make titles longer than one line holds.
    figure.suptitle("\n".join(textwrap.wrap(title, TITLE_CHARACTERS)), fontsize=10)
    return figure
