"""Choices made from the machine: precision, memory format, image cache, data-loader settings and threads."""

from __future__ import annotations

import copy
import functools
import math
import os
import platform
import shutil
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from finetune.runtime.console import say
from zoo.cache import cache_root, read_figures, write_figures

PROBES = "precision_probes.json"  # bf16 timings in $ZOO_CACHE, once per CPU model, network, size and torch version
BF16_PROBE_MIN_SPEEDUP = 1.2  # below this, bf16's rounding is not worth its gain
MEMORY_CACHE_SHARE = 0.25  # the decoded images may take this share of the memory available now
DISK_CACHE_SHARE = 0.5  # and this share of the free disk, leaving room for checkpoints and other programs
SMALL_DATASET = 512  # fewer images than this: worker start-up costs more than it saves
# torch's own thread count (OMP_NUM_THREADS, else the physical cores), read before zoo changes it: a ceiling.
TORCH_DEFAULT_THREADS = torch.get_num_threads()
LOAD_WINDOW_SECONDS = 0.2  # how long the other processes' use of the cores is watched before choosing threads


@dataclass(frozen=True)
class Choice:
    """A setting zoo picked, with the reason it says to the user."""

    value: str
    reason: str


@dataclass(frozen=True)
class LoaderSettings:
    """DataLoader settings that depend on the machine."""

    num_workers: int
    pin_memory: bool
    persistent_workers: bool


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return set(line.partition(":")[2].split())


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def remembered_speedup(what: str, measure: Callable[[], float]) -> tuple[float, str]:
    """The bf16 speed-up ``measure()`` times for ``what``, timed once per CPU model, machine architecture and torch
    version and then read from ``$ZOO_CACHE``; with a few words saying which (the timing costs seconds, and is
    never silent)."""
    key = f"{cpu_model()} ({platform.machine()}) | {what} | torch {torch.__version__}"
    entries = read_figures(PROBES)
    if isinstance(entries.get(key), (int, float)):
        return float(entries[key]), f"timed on this CPU before, kept in {cache_root() / PROBES}"
    say(f"timing {what} in bf16 against fp32 on this CPU (once: the result is kept in {cache_root() / PROBES})")
    speedup = measure()
    write_figures(PROBES, {**entries, key: speedup})
    return speedup, "timed now"


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask, which containers and taskset narrow)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def others_busy_cores(window: float = LOAD_WINDOW_SECONDS) -> float:
    """Cores of this process's affinity that other processes keep busy now: their CPU time over ``window``
    seconds (``/proc/stat``, this process's own time taken out).

    Not the 1-minute load average: it still counts a run that ended a minute ago, so a second run started
    after the first would take the machine for busy. Without ``/proc``, the load average is all there is.
    """
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
    before = _cpu_ticks(cpus)
    if before is None:
        return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    own_before = _own_ticks()
    time.sleep(window)
    after = _cpu_ticks(cpus)
    if after is None or after[1] <= before[1]:
        return 0.0
    busy = after[0] - before[0] - (_own_ticks() - own_before)
    return max(0.0, len(cpus) * busy / (after[1] - before[1]))


def _cpu_ticks(cpus: set[int]) -> tuple[int, int] | None:
    """Busy and total clock ticks of ``cpus`` since boot (``/proc/stat``), None where that is not readable."""
    busy = total = 0
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            ticks = [int(value) for value in fields[:8]]  # user nice system idle iowait irq softirq steal
            total += sum(ticks)
            busy += sum(ticks) - ticks[3] - ticks[4]
    return (busy, total) if total else None


def _own_ticks() -> float:
    """This process's CPU time, every thread, in the clock ticks of ``/proc/stat``."""
    times = os.times()
    return (times.user + times.system) * os.sysconf("SC_CLK_TCK")


def choose_threads(requested: int | None, workers: int, processes: int = 1) -> Choice:
    """Intra-op threads of each training process: the cores the other processes leave free, shared by the
    ``processes`` of a run, less each one's ``workers`` (loader processes), at least 1.

    Beside busy processes, torch's default (one thread per core) made every step 10-20x slower here: its
    threads wait for each other at every operation, and each waits for a core. Never above torch's own
    default, which ``OMP_NUM_THREADS`` sets and which leaves hyper-threads out. Where that ceiling is one
    thread, nothing is measured.
    """
    if requested is not None:
        return Choice(str(requested), "as requested")
    cores = usable_cores()
    shares = [f"{cores} usable cores"] + ([f"shared by {processes} training processes"] if processes > 1 else [])
    if TORCH_DEFAULT_THREADS == 1:
        return Choice("1", "torch's default is 1 thread (OMP_NUM_THREADS=1)")
    if cores // processes <= 1:
        return Choice("1", ", ".join(shares))
    busy = others_busy_cores()
    free = max(0.0, cores - busy) / processes
    fitting = math.ceil(free - 0.5) - workers  # a core half taken by another process is not free
    threads = max(1, min(fitting, cores // processes, TORCH_DEFAULT_THREADS))
    reasons = [*shares, f"{busy:.1f} kept busy by other processes"]
    if workers:
        reasons.append(f"{workers} loader workers each")
    if threads == TORCH_DEFAULT_THREADS and fitting > threads:
        reasons.append(f"torch's default of {threads} (OMP_NUM_THREADS or the physical cores) as the ceiling")
    return Choice(str(threads), ", ".join(reasons))


@contextmanager
def run_arithmetic() -> Iterator[None]:
    """CPU arithmetic for a run, given back as it was afterwards: the run sets its own thread count, and numbers
    below float32's normal range (under 1e-38) count as zero while it runs.

    Once a network fits its data, many of its gradients reach that range, where x86 CPUs take a slow path on
    every operation: small_cnn trained 1.3-1.5x slower here once its loss neared zero. The flag holds in this
    thread and the threads torch starts after it (a pool already running keeps its own).
    """
    threads = torch.get_num_threads()
    # torch has no getter for the flag: a denormal input reads as zero while it is set.
    flushed_before = torch.tensor([1e-40]).mul(1.0).item() == 0.0
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.set_flush_denormal(flushed_before)


def available_memory() -> int:
    """Bytes of memory that can be used without swapping (``MemAvailable``), 0 when unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0


def has_depthwise_convolutions(network: nn.Module) -> bool:
    """True when ``network`` holds depthwise convolutions (one filter per input channel, as in MobileNets)."""
    return any(isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels for m in network.modules())


def choose_precision(requested: str, accelerator: str, network: nn.Module | None = None,
                     image_size: int = 224, name: str | None = None) -> Choice:
    """Resolve ``auto``: bf16-mixed where the hardware runs bf16 natively and fast, else 32.

    On a CPU, a ``network`` (the registry's ``name``) with depthwise convolutions is timed in both precisions:
    oneDNN's bf16 depthwise kernels can be no faster than fp32, whatever the CPU's flags promise. Every timing
    is made once per machine (``remembered_speedup``).
    """
    if requested != "auto":
        return Choice(requested, "as requested")
    choice = _precision_for_hardware(accelerator)
    if choice.value == "bf16-mixed" and network is not None and not _uses_cuda(accelerator) \
            and has_depthwise_convolutions(network):
        size = min(image_size, 224)
        speedup, source = remembered_speedup(f"{name or type(network).__name__} at {size} px",
                                             lambda: network_bf16_speedup(network, size))
        if speedup < BF16_PROBE_MIN_SPEEDUP:
            return Choice("32", f"depthwise convolutions: bf16 trained this network only {speedup:.2f}× as fast as "
                                f"fp32 ({source})")
        return Choice("bf16-mixed", f"{choice.reason}; with its depthwise convolutions this network still ran "
                                    f"{speedup:.2f}× faster in bf16 ({source})")
    return choice


def _uses_cuda(accelerator: str) -> bool:
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def network_bf16_speedup(network: nn.Module, image_size: int, batch: int = 8, repeats: int = 3) -> float:
    """fp32 time over bf16-autocast time of one training step (forward and backward) of a copy of ``network``."""
    model = copy.deepcopy(network).train().to(memory_format=torch.channels_last)
    images = torch.randn(batch, 3, image_size, image_size).contiguous(memory_format=torch.channels_last)
    return _bf16_speedup(lambda: model(images).float().sum().backward(), repeats)


def _bf16_speedup(train_step: Callable[[], None], repeats: int) -> float:
    """fp32 time over bf16-autocast time of ``train_step`` on the CPU, the median of ``repeats`` interleaved pairs."""

    def timed(bf16: bool) -> float:
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            train_step()
        return time.perf_counter() - started

    timed(True), timed(False)  # oneDNN builds its kernels on the first call
    # Interleaved: a change of load on the machine hits both precisions.
    return statistics.median(timed(False) / timed(True) for _ in range(repeats))


def _precision_for_hardware(accelerator: str) -> Choice:
    if _uses_cuda(accelerator):
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return Choice("bf16-mixed", f"{torch.cuda.get_device_name()} supports bf16")
        return Choice("16-mixed", "GPU without bf16: fp16 mixed precision")
    flags = cpu_flags()
    if "amx_bf16" in flags:
        return Choice("bf16-mixed", "CPU has AMX-BF16 matrix units")
    if "avx512_bf16" in flags:
        # Without AMX, bf16 convolutions may or may not beat fp32 (it depends on oneDNN's kernels for
        # the core): a short timing decides.
        speedup, source = remembered_speedup("a 3×3 convolution", bf16_conv_speedup)
        if speedup >= BF16_PROBE_MIN_SPEEDUP:
            return Choice("bf16-mixed", f"CPU has avx512_bf16 (no AMX); a bf16 convolution ran {speedup:.1f}× faster "
                                        f"({source})")
        return Choice("32", f"CPU has avx512_bf16 but no AMX; a bf16 convolution ran only {speedup:.1f}× as fast "
                            f"({source}): fp32")
    return Choice("32", "CPU has no native bf16 (no AMX / avx512_bf16): fp32")


@functools.lru_cache(maxsize=1)
def bf16_conv_speedup(repeats: int = 5) -> float:
    """fp32 time over bf16-autocast time of a ResNet-like 3×3 convolution, forward and backward (median)."""
    conv = nn.Conv2d(64, 64, 3, padding=1).to(memory_format=torch.channels_last)
    images = torch.randn(16, 64, 28, 28).contiguous(memory_format=torch.channels_last).requires_grad_()
    return _bf16_speedup(lambda: conv(images).float().sum().backward(), repeats)


def choose_memory_format(requested: str, model: nn.Module) -> Choice:
    """channels_last for convolutional networks (faster with oneDNN and cuDNN), unless told otherwise."""
    if requested != "auto":
        return Choice(requested, "as requested")
    has_conv = any(isinstance(m, nn.Conv2d) for m in model.modules())
    if has_conv:
        return Choice("channels_last", "convolutional network")
    return Choice("contiguous", "no convolutions")


def choose_loader(requested_workers: int | None, num_images: int, gpu: bool) -> LoaderSettings:
    """Worker processes, pinned memory and persistent workers for a loader of ``num_images``.

    Training on CPU, the step already uses every core: a loader process beside it on 2 cores made
    small_cnn on digits 3× slower here, so only machines with cores to spare get workers. With a GPU,
    all but one core prepare images, and pinned memory lets the copy to the GPU run asynchronously.
    Persistent workers keep their process (and its share of the image cache) between epochs.
    """
    if requested_workers is not None:
        workers = requested_workers
    elif num_images < SMALL_DATASET:
        workers = 0
    elif gpu:
        workers = max(1, min(8, usable_cores() - 1))
    else:
        workers = max(0, min(8, usable_cores() // 2 - 1))
    return LoaderSettings(workers, pin_memory=gpu, persistent_workers=workers > 0)


def choose_cache(requested: str, needed_bytes: int, free_memory: int, free_disk: int | None = None) -> Choice:
    """Resolve the decode-once image cache within its budget: ``MEMORY_CACHE_SHARE`` of the memory available,
    ``DISK_CACHE_SHARE`` of the free disk (``free_disk``; None: unknown). Past it, images stream (``none``):
    decoded every epoch in the loader workers, so memory stays bounded whatever the data's size.

    ``auto`` never writes to disk on its own: a data set too large for memory can be too large for the
    disk too; ``disk`` is there to ask for.
    """
    size = f"{needed_bytes / 2**20:,.0f} MiB of decoded images"
    memory = f"{MEMORY_CACHE_SHARE:.0%} of {free_memory / 2**30:.1f} GiB available"
    streamed = "images decoded every epoch in the loader workers"
    if requested in ("auto", "memory") and needed_bytes <= MEMORY_CACHE_SHARE * free_memory:
        return Choice("memory", f"{size} fit in memory ({memory})")
    if requested == "auto":
        return Choice("none", f"{size} exceed the memory budget ({memory}): {streamed}")
    if requested == "memory":
        return Choice("none", f"--cache memory, but {size} exceed its budget ({memory}): {streamed} instead")
    if requested == "disk" and free_disk is not None and needed_bytes > DISK_CACHE_SHARE * free_disk:
        return Choice("none", f"--cache disk, but {size} exceed its budget ({DISK_CACHE_SHARE:.0%} of "
                              f"{free_disk / 2**30:.1f} GiB free in the cache folder; ZOO_CACHE moves it): {streamed} "
                              "instead")
    return Choice(requested, "as requested")


def free_disk(folder: Path) -> int | None:
    """Bytes free on the filesystem that holds (or will hold) ``folder``; None when unknown."""
    existing = next((path for path in (folder, *folder.absolute().parents) if path.exists()), None)
    try:
        return shutil.disk_usage(existing).free if existing is not None else None
    except OSError:
        return None
