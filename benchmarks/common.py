"""What every benchmark shares: the machine's description, medians with their spread, step timing, RESULTS.md."""

from __future__ import annotations

import contextlib
import io
import platform
import re
import shlex
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data.dataloader import _BaseDataLoaderIter

from finetune.data.builtin import resolve_data
from finetune.runtime.hardware import available_memory, cpu_flags, cpu_model, usable_cores

RESULTS = Path(__file__).with_name("RESULTS.md")
PACKAGES = ("torch", "torchvision", "timm", "pytorch-lightning", "numpy", "pillow")
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def machine() -> str:
    """One Markdown paragraph: date, command, CPU, GPU, memory and versions."""
    flags = cpu_flags()
    has = ", ".join(f"{flag} {'yes' if flag in flags else 'no'}" for flag in CPU_FLAGS)
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    versions = ", ".join(f"{name} {version(name)}" for name in PACKAGES)
    command = " ".join(["python -m", f"benchmarks.{Path(sys.argv[0]).stem}", *map(shlex.quote, sys.argv[1:])])
    return (
        f"- date: {datetime.now():%Y-%m-%d %H:%M}\n"
        f"- command: `{command}` (from the repository root)\n"
        f"- CPU: {cpu_model()}, {usable_cores()} usable cores, torch threads {torch.get_num_threads()}; {has}\n"
        f"- GPU: {gpu}; memory available: {available_memory() / 2**30:.1f} GiB\n"
        f"- Python {platform.python_version()}, {versions}\n"
    )


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def spread(values: Sequence[float], digits: int = 1) -> str:
    """``median (min–max)`` of ``values``."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{median(values):.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def table(rows: Sequence[dict[str, object]]) -> str:
    """A Markdown table of ``rows`` (their keys are the columns)."""
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row[column]) for column in columns) + " |" for row in rows]
    return "\n".join(lines)


def write_results(name: str, title: str, body: str) -> None:
    """Replace the section ``name`` of RESULTS.md (or add it) with the machine's description and ``body``."""
    begin, end = f"<!-- {name}: begin -->", f"<!-- {name}: end -->"
    section = f"{begin}\n## {title}\n\n{machine()}\n{body.strip()}\n{end}"
    text = (RESULTS.read_text(encoding="utf-8") if RESULTS.is_file() else
            "# Benchmark results\n\nWritten by the scripts in `benchmarks/`; each section by one script, "
            "replaced when it runs again.\n")
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.DOTALL)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else f"{text.rstrip()}\n\n{section}\n"
    RESULTS.write_text(text, encoding="utf-8")
    print(f"\nwritten to {RESULTS} (section {name})")


def synchronize(device: torch.device) -> None:
    """Wait for the device, so a timestamp marks finished work (CUDA runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_gflops(dtype: torch.dtype, device: torch.device, size: int | None = None, repeats: int = 5) -> float:
    """Measured GFLOP/s of a square matmul, the best of ``repeats``: the ceiling a training step is compared with.

    The best, not the median: on a shared machine slow repeats measure the neighbours, and a ceiling
    set too low would flatter the step. 4096 on a CPU: smaller squares did not reach AMX's peak here.
    """
    size = size or (8192 if device.type == "cuda" else 4096)  # large enough for the peak, short enough to repeat
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    a @ b  # the first call picks and loads kernels
    timings = []
    for _ in range(repeats):
        synchronize(device)
        started = time.perf_counter()
        a @ b
        synchronize(device)
        timings.append(time.perf_counter() - started)
    return 2 * size**3 / min(timings) / 1e9


class StepTimes(pl.Callback):
    """Per training step: seconds getting the batch, the gap before the step, and the step's total.

    The total runs from the end of the previous step (or the epoch's start). The gap is its part before
    ``on_train_batch_start``, where Lightning fetches the batch; getting the batch is the time inside
    the DataLoader's ``__next__`` (loading it in this process, or waiting for a worker's) in that gap.
    The rest of the gap is Lightning's own work between steps (the scheduler, hooks, moving the batch).
    """

    def __init__(self) -> None:
        self.epochs: list[list[tuple[float, float, float]]] = []  # per epoch and step: (loader, gap, total) seconds
        self._last = 0.0
        self._loading = 0.0  # loader seconds since the previous step's end
        self._waited = 0.0
        self._started = 0.0
        self._next: Callable[[Any], Any] | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._next = _BaseDataLoaderIter.__next__
        real_next = self._next

        def timed_next(iterator: Any) -> Any:
            started = time.perf_counter()
            try:
                return real_next(iterator)
            finally:
                self._loading += time.perf_counter() - started

        _BaseDataLoaderIter.__next__ = timed_next

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._next is not None:
            _BaseDataLoaderIter.__next__ = self._next
            self._next = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.epochs.append([])
        self._last = time.perf_counter()
        self._loading = 0.0  # validation batches of the previous epoch are not waits of this one

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._waited = self._loading
        self._started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        synchronize(pl_module.device)
        now = time.perf_counter()
        self.epochs[-1].append((self._waited, self._started - self._last, now - self._last))
        self._last = now
        self._loading = 0.0

    def step_seconds(self, skip: int = 0, epoch: int = 0) -> list[float]:
        """Total seconds of each step of ``epoch`` (the first by default) after its first ``skip`` (warm-up) steps."""
        return [total for _loader, _gap, total in self.epochs[epoch][skip:]]


def digits_folder(root: Path, train_per_class: int, val_per_class: int) -> Path:
    """A train/ + val/ folder of the first images of each digit of the built-in digits data set."""
    source = resolve_data("digits")
    if root.exists():
        shutil.rmtree(root)
    for digit in sorted(path.name for path in source.iterdir() if path.is_dir()):
        files = sorted((source / digit).glob("*.png"), key=lambda path: int(path.stem))
        for part, chosen in (("train", files[:train_per_class]), ("val", files[train_per_class:][:val_per_class])):
            (root / part / digit).mkdir(parents=True)
            for file in chosen:
                shutil.copy2(file, root / part / digit / file.name)
    return root


def photos_folder(root: Path, classes: int, per_class: int, size: tuple[int, int] = (500, 375)) -> Path:
    """JPEG photos the size of a phone's preview: random crops of scikit-image's colour photos, one photo per class."""
    from PIL import Image
    from skimage import data

    photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket(), data.immunohistochemistry()]
    generator = torch.Generator().manual_seed(0)
    if root.exists():
        shutil.rmtree(root)
    for label in range(classes):
        photo = photos[label % len(photos)]
        height, width = photo.shape[:2]
        (root / f"class{label}").mkdir(parents=True)
        for index in range(per_class):
            top, left = (int(torch.randint(0, extent // 3, (), generator=generator)) for extent in (height, width))
            crop = Image.fromarray(photo[top : top + 2 * height // 3, left : left + 2 * width // 3])
            crop.resize(size).save(root / f"class{label}" / f"{index}.jpg", quality=90)
    return root


def interleaved(variants: Sequence[str], rounds: int) -> list[tuple[int, str]]:
    """``(round, variant)`` in run order: every round runs every variant, starting one later each round."""
    return [(r, variants[(r + i) % len(variants)]) for r in range(rounds) for i in range(len(variants))]


@contextlib.contextmanager
def silenced() -> Iterator[None]:
    """Drop what a run prints (progress bar, zoo's choices): the benchmark prints its own table."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield
