"""Inference speed of an architecture on this machine: ms per image at batch 1, images/s at a larger batch."""

from __future__ import annotations

import json
import logging
import math
import os
import statistics
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

import zoo
from zoo._io import DiskError, write_text_atomic

if TYPE_CHECKING:
    from finetune.results.records import RunSummary

SPEED_FILE = "inference.json"  # kept in the run folder, so a resumed comparison need not measure again
MIN_RUN_SECONDS = 1.0  # per measurement, split into timing blocks whose spread is kept
MIN_BLOCKS = 7  # a spread needs several blocks, however slow one forward pass is
BLOCK_SECONDS = 0.02  # long enough that the timer's own cost does not count
# Timing counts as loaded when other processes kept more than this many cores (or this share of them) busy.
OTHER_LOAD_LIMIT = 0.5
OTHER_LOAD_SHARE = 0.25


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _busy_seconds() -> float | None:
    """CPU seconds every process on the machine has been busy since boot (Linux's /proc/stat); None elsewhere."""
    try:
        ticks = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    idle = ticks[3] + ticks[4]  # idle and iowait
    return (sum(ticks) - idle) / os.sysconf("SC_CLK_TCK")


class OtherLoad:
    """The cores other processes kept busy during a ``with`` block: the machine's busy time less this process's."""

    cores: float | None = None

    def __enter__(self) -> OtherLoad:
        self.busy, self.own, self.wall = _busy_seconds(), time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        busy, wall = _busy_seconds(), time.perf_counter() - self.wall
        if busy is not None and self.busy is not None and wall > 0:
            self.cores = max(0.0, (busy - self.busy - (time.process_time() - self.own)) / wall)


@dataclass(frozen=True)
class Speed:
    """Prediction latency (one image at a time) with its interquartile range over timing blocks, and
    throughput (``batch_size`` at a time), on ``device``."""

    ms_per_image: float
    images_per_second: float
    batch_size: int
    device: str
    ms_per_image_low: float | None = None  # 25th percentile of the blocks; None in files of older runs
    ms_per_image_high: float | None = None  # 75th percentile
    other_load: float | None = None  # cores other processes kept busy while it was timed; None: not known

    @property
    def loaded(self) -> bool:
        """True when other processes competed for the cores while this was timed: the figures are unreliable."""
        return self.other_load is not None and self.other_load > max(OTHER_LOAD_LIMIT, OTHER_LOAD_SHARE * _cores())

    def clearly_faster_than(self, other: Speed) -> bool:
        """True only when this latency's whole spread lies below the other's: no ranking inside the noise."""
        if self.ms_per_image_high is None or other.ms_per_image_low is None:
            return False
        return self.ms_per_image_high < other.ms_per_image_low


def _block_seconds(model: nn.Module, images: torch.Tensor, precision: str) -> list[float]:
    """Seconds per forward pass in each timing block (``torch.utils.benchmark``, CUDA synchronised)."""
    # torch.utils.benchmark imports cpp_extension, which logs a warning on CUDA builds without a GPU.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    from torch.utils.benchmark import Timer

    mixed = precision.endswith("-mixed")
    dtype = torch.bfloat16 if precision.startswith("bf16") else torch.float16
    autocast = torch.autocast(images.device.type, dtype=dtype) if mixed else nullcontext()

    def forward() -> None:
        with torch.inference_mode(), autocast:
            model(images)

    forward()  # the first call pays for oneDNN / cuDNN kernel selection
    # torch's Timer synchronises CUDA and runs at this process's thread count (its default is one thread).
    timer = Timer(stmt="forward()", globals={"forward": forward}, num_threads=torch.get_num_threads())
    once = timer.timeit(1).median
    number = max(1, math.ceil(BLOCK_SECONDS / max(once, 1e-9)))
    blocks: list[float] = []
    while len(blocks) < MIN_BLOCKS or (sum(blocks) * number < MIN_RUN_SECONDS and len(blocks) < 1000):
        blocks.append(timer.timeit(number).median)
    return blocks


def measure_speed(arch: str, num_classes: int, image_size: int, *, batch_size: int, precision: str = "32",
                  memory_format: str = "contiguous", use_cuda: bool = False) -> Speed:
    """Time ``arch`` with a ``num_classes`` head, untrained: speed does not depend on the weights' values."""
    device = torch.device("cuda" if use_cuda else "cpu")
    layout = torch.channels_last if memory_format == "channels_last" else torch.contiguous_format
    model = zoo.create_model(arch, num_classes).eval().to(device).to(memory_format=layout)

    def images(count: int) -> torch.Tensor:
        return torch.randn(count, 3, image_size, image_size, device=device).contiguous(memory_format=layout)

    with OtherLoad() as load:
        latency = _block_seconds(model, images(1), precision)
    low, median, high = statistics.quantiles(latency, n=4) if len(latency) > 1 else latency * 3
    batch = statistics.median(_block_seconds(model, images(batch_size), precision))
    name = torch.cuda.get_device_name(device) if use_cuda else f"CPU, {torch.get_num_threads()} threads"
    return Speed(round(median * 1000, 3), round(batch_size / batch, 1), batch_size, name,
                 round(low * 1000, 3), round(high * 1000, 3),
                 None if load.cores is None else round(load.cores, 2))


def _saved_speed(path: Path) -> Speed | None:
    """The speed saved in ``path``; None when the file is damaged (it is a cache: measured again, then)."""
    try:
        speed = Speed(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError, RecursionError):  # unreadable, not JSON, not a Speed's fields
        return None
    figures = (speed.ms_per_image, speed.images_per_second, speed.batch_size, speed.ms_per_image_low or 0,
               speed.ms_per_image_high or 0)
    fits = all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in figures)
    return speed if fits and isinstance(speed.device, str) else None


def run_speed(run_dir: Path, summary: RunSummary, *, save: bool) -> Speed:
    """The speed of a finished run's network: read from ``inference.json``, else measured (and saved if asked).

    Measured as the run trained: its image size, precision, memory format, device, and its batch size
    for the throughput figure.
    """
    path = run_dir / SPEED_FILE
    saved = _saved_speed(path) if path.is_file() else None
    if saved is not None:
        return saved
    speed = measure_speed(
        summary.arch, summary.num_classes, summary.image_size, batch_size=summary.config.data.batch_size,
        precision=summary.precision, memory_format=summary.memory_format,
        use_cuda=summary.config.trainer.accelerator != "cpu" and torch.cuda.is_available(),
    )
    if save:
        try:
            write_text_atomic(path, json.dumps(asdict(speed), indent=2) + "\n")
        except DiskError:  # a cache: a read-only or full run folder only means measuring again next time
            pass
    return speed
