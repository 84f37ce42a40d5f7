"""Training images/s: zoo's fine-tuning path against a minimal hand-written PyTorch loop.

    python -m benchmarks.train_throughput [--models small_cnn resnet18] [--batch-size 32] [--rounds 2]

Three variants per model, interleaved step by step in the same process (after each of zoo's steps,
one step of each hand loop runs, see ``Interleave``):

- ``torch default``: a minimal loop at PyTorch's defaults: fp32, NCHW, images decoded and transformed
  in the main process every step (``DataLoader`` defaults);
- ``torch @ zoo``: the same loop at zoo's settings: its precision, memory format, fused optimiser and
  data loader (decode-once cache, workers, pinned memory);
- ``zoo``: ``finetune.training.run.train``, the LightningModule and Trainer that ``zoo finetune`` runs.

Each figure is ``batch / median step time`` of one round (a step: waiting for the batch, forward,
backward, optimiser), after warm-up steps; the table shows the median over rounds and the spread
(min–max). Each round builds fresh networks and a fresh zoo run.
Achieved GFLOP/s count a training step as 3× the forward FLOPs (``zoo.profile``) and are compared with
the matmul ceiling measured in the same rounds.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

import zoo
from benchmarks.common import (
    StepTimes,
    digits_folder,
    matmul_gflops,
    median,
    silenced,
    spread,
    synchronize,
    table,
    write_results,
)
from finetune.config import DataConfig, ModelConfig, RunConfig, TrainerConfig
from finetune.data.datamodule import ImageDataModule
from finetune.data.images import ImageDataset
from finetune.data.split import split_folder
from finetune.data.transforms import train_transform
from finetune.runtime.hardware import choose_memory_format, choose_precision
from finetune.training.run import train
from zoo.profile import profile
from zoo.spec import ArchSpec

VARIANTS = ("torch default", "torch @ zoo", "zoo")
MODELS = ("small_cnn", "resnet18", "googlenet", "resnet50")
TRAIN_IMAGES = 1700  # digits has at least 174 images of each class: 170 train, the rest val


@dataclass(frozen=True)
class Settings:
    """One benchmark's sizes and device."""

    device: torch.device
    batch_size: int
    warmup: int
    steps: int
    rounds: int
    workdir: Path


def steps_for(spec: ArchSpec, settings: Settings, ceiling: float, seconds: float) -> Settings:
    """``settings`` with enough timed steps for about ``seconds`` per run (small models take many more)."""
    # A training step reaches roughly a third of the matmul ceiling: a guess that only sizes the run.
    step_seconds = settings.batch_size * 3 * profile(spec).gflops / (ceiling / 3)
    most = TRAIN_IMAGES // settings.batch_size - settings.warmup - 1  # one epoch, no wrap-around
    return dataclasses.replace(settings, steps=min(most, max(settings.steps, round(seconds / step_seconds))))


class HandLoop:
    """The loop a user writes by hand, one step at a time, so its steps can run between zoo's."""

    def __init__(self, arch: str, loader: DataLoader, device: torch.device, memory_format: torch.memory_format,
                 bf16: bool, cudnn_benchmark: bool, fused: bool | None) -> None:
        self.network = zoo.create_model(arch, 10).to(device, memory_format=memory_format).train()
        self.optimizer = torch.optim.AdamW(self.network.parameters(), lr=1e-3, fused=fused)
        self.loader = loader
        self.batches = iter(loader)
        self.device = device
        self.memory_format = memory_format
        self.bf16 = bf16
        self.cudnn_benchmark = cudnn_benchmark
        self.seconds: list[float] = []

    def step(self) -> None:
        """One training step, waiting for its batch included; its seconds are appended to ``seconds``."""
        zoo_benchmark = torch.backends.cudnn.benchmark  # zoo's Trainer turns it on for the whole process
        torch.backends.cudnn.benchmark = self.cudnn_benchmark
        started = time.perf_counter()
        try:
            images, labels = next(self.batches)
        except StopIteration:
            self.batches = iter(self.loader)
            images, labels = next(self.batches)
        images = images.to(self.device, memory_format=self.memory_format, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            loss = F.cross_entropy(self.network(images), labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        synchronize(self.device)
        self.seconds.append(time.perf_counter() - started)
        torch.backends.cudnn.benchmark = zoo_benchmark


class Interleave(StepTimes):
    """Times zoo's steps and, after each, runs one step of every hand loop (alternating their order).

    Step by step, the variants share the machine's state of the moment: on a machine shared with
    other jobs this is the only fair comparison. Zoo's next step is timed from after the hand steps.
    """

    def __init__(self, loops: list[HandLoop]) -> None:
        super().__init__()
        self.loops = loops

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        for loop in self.loops if batch_idx % 2 else self.loops[::-1]:
            loop.step()
        self._last = time.perf_counter()
        self._loading = 0.0  # the hand loops' batches


def run_round(arch: str, folder: Path, loops: list[HandLoop], settings: Settings, run: int) -> list[float]:
    """Seconds of each of zoo's steps after the warm-up, in a real ``train(config)`` run at zoo's defaults."""
    timer = Interleave(loops)
    config = RunConfig(
        data=DataConfig(path=str(folder), batch_size=settings.batch_size),
        model=ModelConfig(arch=arch, weights="none"),  # the same work as pretrained weights, and no download
        trainer=TrainerConfig(epochs=1, max_steps=settings.warmup + settings.steps, seed=run,
                              accelerator="gpu" if settings.device.type == "cuda" else "cpu"),
        out=str(settings.workdir / f"run-{arch}-{run}"),
    )
    with silenced():
        train(config, watchers=[timer])
    return timer.step_seconds(skip=settings.warmup)


def measure(models: list[str], settings: Settings, seconds: float) -> tuple[list[dict[str, object]], str]:
    """The table rows of ``models`` (runs of about ``seconds`` each) and a line on the settings zoo chose."""
    accelerator = "gpu" if settings.device.type == "cuda" else "cpu"
    precision = choose_precision("auto", accelerator)
    bf16 = precision.value == "bf16-mixed"
    ceiling_dtype = torch.bfloat16 if bf16 else torch.float32
    first_ceiling = matmul_gflops(ceiling_dtype, settings.device)
    # Both ceilings, to show why zoo picked its precision (a CPU without bf16 units emulates it, slowly).
    other_ceilings = ", ".join(
        f"{str(dtype).removeprefix('torch.')} {matmul_gflops(dtype, settings.device, size):.1f} GFLOP/s"
        for dtype, size in ((torch.float32, None), (torch.bfloat16, 512 if not bf16 else None)))
    sized = {arch: steps_for(zoo.get_spec(arch), settings, first_ceiling, seconds) for arch in models}
    most = max(run.warmup + run.steps for run in sized.values())
    folder = digits_folder(settings.workdir / "digits",
                           train_per_class=math.ceil((most + 1) * settings.batch_size / 10), val_per_class=2)
    split = split_folder(folder)
    rows = []
    chosen = ""
    for arch in models:
        spec = zoo.get_spec(arch)
        size = spec.input_size
        settings = sized[arch]
        plain = DataLoader(ImageDataset(split.train, train_transform(spec.preprocessing.at(size), "standard")),
                           batch_size=settings.batch_size, shuffle=True)
        data = ImageDataModule(split, spec, size, DataConfig(batch_size=settings.batch_size))
        zoo_loader = data.train_dataloader()
        layout = choose_memory_format("auto", zoo.create_model(arch, 10))
        zoo_format = torch.channels_last if layout.value == "channels_last" else torch.contiguous_format
        chosen = (f"zoo chose: precision {precision.value} ({precision.reason}); memory format {layout.value}; "
                  f"cache {data.cache.value} ({data.cache.reason}); {zoo_loader.num_workers} loader workers. "
                  f"Matmul ceilings: {other_ceilings}")
        speed: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
        ceilings = []
        for run in range(settings.rounds):
            torch.manual_seed(run)
            loops = [HandLoop(arch, plain, settings.device, torch.contiguous_format, bf16=False, cudnn_benchmark=False,
                              fused=None),
                     HandLoop(arch, zoo_loader, settings.device, zoo_format, bf16=bf16, cudnn_benchmark=True,
                              fused=True)]
            zoo_seconds = run_round(arch, folder, loops, settings, run)
            timed = [loop.seconds[settings.warmup:] for loop in loops] + [zoo_seconds]
            for variant, step_seconds in zip(VARIANTS, timed, strict=True):
                speed[variant].append(settings.batch_size / median(step_seconds))
            ceilings.append(matmul_gflops(ceiling_dtype, settings.device))
        train_gflop = 3 * profile(spec).gflops * (size / spec.input_size) ** 2
        achieved = [ips * train_gflop for ips in speed["zoo"]]
        rows.append({
            "model": f"{arch} @ {size}",
            "timed steps": settings.steps,
            "torch default img/s": spread(speed["torch default"], 2),
            "torch @ zoo img/s": spread(speed["torch @ zoo"], 2),
            "zoo img/s": spread(speed["zoo"], 2),
            "zoo ÷ torch default":
                spread([z / d for z, d in zip(speed["zoo"], speed["torch default"], strict=True)], 2) + "×",
            "zoo overhead vs hand loop":
                spread([100 * (1 - z / h) for z, h in zip(speed["zoo"], speed["torch @ zoo"], strict=True)]) + " %",
            "zoo GFLOP/s": spread(achieved),
            f"of {str(ceiling_dtype).removeprefix('torch.')} matmul ceiling": spread(
                [100 * a / c for a, c in zip(achieved, ceilings, strict=True)]) + f" % of {median(ceilings):.0f}",
        })
        print(table(rows[-1:]), flush=True)
    return rows, chosen


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--batch-size", type=int, default=DataConfig().batch_size, help="zoo's default unless given")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps at the start of each run")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per run, at least")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="aim for this long per run (more steps for small models)")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each variant (interleaved)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="zoo-bench-") as workdir:
        settings = Settings(torch.device(args.device), args.batch_size, args.warmup, args.steps, args.rounds,
                            Path(workdir))
        rows, chosen = measure(args.models, settings, args.seconds)
    body = (f"batch {args.batch_size}, {args.warmup} warm-up + at least {args.steps} timed steps per run, "
            f"{args.rounds} rounds; median (min–max) over rounds. Data: digits (PNG), {args.device}.\n"
            f"{chosen}\n\n{table(rows)}")
    print("\n" + table(rows))
    default_batch = args.batch_size == DataConfig().batch_size
    write_results("train_throughput" if default_batch else f"train_throughput_batch{args.batch_size}",
                  "train_throughput: images/s, zoo vs hand-written loops"
                  + ("" if default_batch else f" (batch {args.batch_size})"),
                  body)


if __name__ == "__main__":
    main()
