"""Inference speed of an architecture on this machine: ms per image at batch 1, images/s at a larger batch."""

from __future__ import annotations

import json
import statistics
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

import zoo

SPEED_FILE = "inference.json"  # kept in the run folder, so a resumed comparison need not measure again
WARMUP_CALLS = 1  # the first call pays for oneDNN / cuDNN kernel selection
MIN_CALLS = 3
MAX_CALLS = 30
MIN_SECONDS = 0.5


@dataclass(frozen=True)
class Speed:
    """Prediction latency (one image at a time) and throughput (``batch_size`` at a time) on ``device``."""

    ms_per_image: float
    images_per_second: float
    batch_size: int
    device: str


def _median_seconds(model: nn.Module, images: torch.Tensor, precision: str) -> float:
    """Median wall time of one forward pass; on CUDA synchronised, so queued kernels are counted."""
    mixed = precision.endswith("-mixed")
    dtype = torch.bfloat16 if precision.startswith("bf16") else torch.float16
    autocast = torch.autocast(images.device.type, dtype=dtype) if mixed else nullcontext()
    synchronize = torch.cuda.synchronize if images.device.type == "cuda" else (lambda: None)
    times: list[float] = []
    with torch.inference_mode(), autocast:
        for _ in range(WARMUP_CALLS):
            model(images)
        while len(times) < MIN_CALLS or (sum(times) < MIN_SECONDS and len(times) < MAX_CALLS):
            synchronize()
            started = time.perf_counter()
            model(images)
            synchronize()
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure_speed(arch: str, num_classes: int, image_size: int, *, batch_size: int, precision: str = "32",
                  memory_format: str = "contiguous", use_cuda: bool = False) -> Speed:
    """Time ``arch`` with a ``num_classes`` head, untrained: speed does not depend on the weights' values."""
    device = torch.device("cuda" if use_cuda else "cpu")
    layout = torch.channels_last if memory_format == "channels_last" else torch.contiguous_format
    model = zoo.create_model(arch, num_classes).eval().to(device, memory_format=layout)

    def images(count: int) -> torch.Tensor:
        return torch.randn(count, 3, image_size, image_size, device=device).contiguous(memory_format=layout)

    latency = _median_seconds(model, images(1), precision)
    batch = _median_seconds(model, images(batch_size), precision)
    name = torch.cuda.get_device_name(device) if use_cuda else f"CPU, {torch.get_num_threads()} threads"
    return Speed(round(latency * 1000, 3), round(batch_size / batch, 1), batch_size, name)


def run_speed(run_dir: Path, summary: dict[str, Any], *, save: bool) -> Speed:
    """The speed of a finished run's network: read from ``inference.json``, else measured (and saved if asked).

    Measured as the run trained: its image size, precision, memory format, device, and its batch size
    for the throughput figure.
    """
    path = run_dir / SPEED_FILE
    if path.is_file():
        return Speed(**json.loads(path.read_text(encoding="utf-8")))
    config = summary["config"]
    speed = measure_speed(
        summary["arch"], summary["num_classes"], summary["image_size"],
        batch_size=config["data"]["batch_size"], precision=summary["precision"],
        memory_format=summary["memory_format"],
        use_cuda=config["trainer"]["accelerator"] != "cpu" and torch.cuda.is_available(),
    )
    if save:
        path.write_text(json.dumps(asdict(speed), indent=2) + "\n", encoding="utf-8")
    return speed
