"""Choices made from the machine: precision, memory format, data-loader workers."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn


@dataclass(frozen=True)
class Choice:
    """A setting zoo picked, with the reason it says to the user."""

    value: str
    reason: str


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return set(line.partition(":")[2].split())


def choose_precision(requested: str, accelerator: str) -> Choice:
    """Resolve ``auto``: bf16-mixed where the hardware runs bf16 natively and fast, else 32."""
    if requested != "auto":
        return Choice(requested, "as requested")
    use_cuda = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if use_cuda:
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return Choice("bf16-mixed", f"{torch.cuda.get_device_name()} supports bf16")
        return Choice("16-mixed", "GPU without bf16: fp16 mixed precision")
    flags = cpu_flags()
    if "amx_bf16" in flags:
        return Choice("bf16-mixed", "CPU has AMX-BF16 matrix units")
    if "avx512_bf16" in flags:
        return Choice("32", "CPU has avx512_bf16 but no AMX: bf16 autocast gains little there, fp32 kept")
    return Choice("32", "CPU has no native bf16 (no AMX / avx512_bf16): fp32")


def choose_memory_format(requested: str, model: nn.Module) -> Choice:
    """channels_last for convolutional networks (faster with oneDNN and cuDNN), unless told otherwise."""
    if requested != "auto":
        return Choice(requested, "as requested")
    has_conv = any(isinstance(m, nn.Conv2d) for m in model.modules())
    if has_conv:
        return Choice("channels_last", "convolutional network")
    return Choice("contiguous", "no convolutions")


def choose_num_workers(requested: int | None, num_images: int) -> int:
    """Loader worker processes: none for tiny datasets (start-up costs more) or when the CPU trains.

    On CPU the training step already uses every core; a loader process beside it on 2 cores made
    small_cnn on digits 3× slower here. With a GPU, all but one core decode images.
    """
    if requested is not None:
        return requested
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if num_images < 512:
        return 0
    if torch.cuda.is_available():
        return max(1, min(8, cores - 1))
    return max(0, min(8, cores // 2 - 1))
