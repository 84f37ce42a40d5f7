"""How zoo's cost grows with the data: scan, preparation, first step, memory and speed at 10k, 30k, 100k images.

    flock /tmp/zoo-bench.lock python -m benchmarks.scale [--sizes 10000 30000 100000] [--steps 60] [--speed-rounds 3]

Synthetic folders of tiny (32 px) PNGs in 10 classes (``make_folders``). For
each size: the scan of the folder (first run: every image decoded; second run: the scan cache of unchanged
files), the shards written by ``zoo data optimize`` (its default, which stores images this small decoded, and with
``--decoded none`` the files' bytes), and five short training runs of small_cnn, each in its own process (its peak
RSS its own, its DataLoader workers' reported apart): the folder with ``--cache disk`` run twice (first: cold caches;
second: unchanged folder, warm caches), the folder decoded in memory (the speed baseline), and both shards streamed.
Time to the first step runs from ``train()``'s call (imports excluded: the same at every size) to the end of the
first training step. Training images/s is measured over the steps after the first ``WARMUP_STEPS``, the clock
stopped through validation (``FirstStep``). Slopes are least-squares fits of seconds against images.

Training speed on this shared 2-core machine moves by 15-20% from one run to the next, more than the 10% the
shards' target allows: the three speed runs (folder in memory, both shards) are repeated in turns
``--speed-rounds`` times, and each ratio is the median of the rounds' own ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np
import pytorch_lightning as pl

from benchmarks.common import spread, table, write_results

CLASSES = 10
SIDE = 32
UNIQUE = 200  # distinct images per class
WARMUP_STEPS = 10
BATCH = 64
IMAGENET = 1_281_167
RUNS = ("folder-first", "folder-second", "folder-memory", "shards", "shards-bytes")
SPEED_RUNS = ("folder-memory", "shards", "shards-bytes")  # repeated in turns: their speeds are compared
MAX_SPEED_ROUNDS = 10
MIN_SIZE, MAX_SIZE = 1_000, 2_000_000  # images of a folder: enough for 5% validation images, and a disk's worth
MAX_STEPS = 100_000


def make_folders(workdir: Path, sizes: list[int]) -> dict[int, Path]:
    """One folder per size; the largest written file by file, the others hard links to its first images.

    ``UNIQUE`` PNGs per class are encoded once and their bytes written under every name: encoding 100k
    images would take longer than what is measured, and the scan and the loaders decode each file anyway.
    """
    import io

    from PIL import Image

    largest = workdir / f"images-{max(sizes)}"
    rng = np.random.default_rng(0)
    per_class = max(sizes) // CLASSES
    for label in range(CLASSES):
        folder = largest / f"class{label}"
        folder.mkdir(parents=True)
        colour = rng.integers(0, 256, 3)
        encoded = []
        for _ in range(UNIQUE):  # a class colour under noise: a learnable task
            pixels = np.clip(colour + rng.normal(0, 40, (SIDE, SIDE, 3)), 0, 255).astype(np.uint8)
            buffer = io.BytesIO()
            Image.fromarray(pixels).save(buffer, format="PNG")
            encoded.append(buffer.getvalue())
        for index in range(per_class):
            (folder / f"{index:06d}.png").write_bytes(encoded[index % UNIQUE])
    folders = {max(sizes): largest}
    for size in sizes:
        if size == max(sizes):
            continue
        root = workdir / f"images-{size}"
        for label in range(CLASSES):
            (root / f"class{label}").mkdir(parents=True)
            for index in range(size // CLASSES):
                name = f"class{label}/{index:06d}.png"
                os.link(largest / name, root / name)
        folders[size] = root
    return folders


class FirstStep(pl.Callback):
    """When the first training step ended, and the images and training seconds of the steps after the warm-up: the
    clock stops from validation's start to the next epoch's start (validation, checkpoints and the epoch's end are
    not training, and only the smallest size reaches an epoch's end within the steps timed)."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.first_step: float | None = None
        self.images = 0
        self.mark: float | None = None
        self.last: float | None = None
        self.paused = 0.0
        self.pause_started: float | None = None

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        now = time.perf_counter()
        if self.first_step is None:
            self.first_step = now - self.started
        if trainer.global_step == WARMUP_STEPS:
            self.mark = now
        elif trainer.global_step > WARMUP_STEPS:
            self.images += len(batch[1])
            self.last = now

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.mark is not None:
            self.pause_started = time.perf_counter()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.pause_started is not None:
            self.paused += time.perf_counter() - self.pause_started
            self.pause_started = None

    def images_per_second(self) -> float:
        """Training images per second over the timed steps, the paused time left out."""
        assert self.mark is not None, "too few steps to measure the speed"
        assert self.last is not None, "too few steps to measure the speed"
        return self.images / (self.last - self.mark - self.paused)


def child(spec: dict[str, Any]) -> None:
    """One training run (in its own process), its figures printed as one JSON line."""
    from finetune.config import RunConfig, merge
    from finetune.training.run import train

    config = merge(RunConfig(), {
        "data": {"path": spec["data"], "batch_size": BATCH, "augment": "none", "cache": spec["cache"],
                 "image_size": SIDE, "val_fraction": 0.05, "test_fraction": 0.0},
        "model": {"arch": "small_cnn", "weights": "none"},
        "trainer": {"epochs": 1000, "max_steps": spec["steps"], "seed": 0, "accelerator": "cpu", "precision": "32"},
        "out": spec["out"],
    })
    started = time.perf_counter()
    timer = FirstStep(started)
    summary = train(config, watchers=[timer]).summary
    assert summary is not None  # one process: it reports
    print("RESULT " + json.dumps({
        "first_step_s": timer.first_step,
        "images_per_s": timer.images_per_second(),
        # Speed counts only if the run learns: a network at chance has no tiny gradients to slow it down.
        "val_error": summary.val_top1_error,
        # Linux reports KiB; the workers are children (their largest), the run itself is this process.
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "worker_peak_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }), flush=True)


def run_child(data: Path, cache: str, steps: int, out: Path, zoo_cache: Path) -> dict[str, float]:
    spec = {"data": str(data), "cache": cache, "steps": steps, "out": str(out)}
    result = subprocess.run([sys.executable, "-m", "benchmarks.scale", "--child", json.dumps(spec)],
                            capture_output=True, text=True, env={**os.environ, "ZOO_CACHE": str(zoo_cache)},
                            timeout=1800)
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    if result.returncode != 0 or not lines:
        raise SystemExit(f"run on {data} ({cache}) failed: {result.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def timed(function: Any, *args: Any, **kwargs: Any) -> float:
    started = time.perf_counter()
    function(*args, **kwargs)
    return time.perf_counter() - started


def measure(size: int, folder: Path, workdir: Path, steps: int, speed_rounds: int) -> dict[str, Any]:
    from finetune.data.shards import optimize_folder
    from finetune.data.split import split_folder

    os.environ["ZOO_CACHE"] = str(workdir / f"scan-cache-{size}")  # this process's scans only
    scan_first = timed(split_folder, folder)
    scan_second = timed(split_folder, folder)
    shards = workdir / f"shards-{size}"
    optimize = timed(optimize_folder, folder, shards, val_fraction=0.05, test_fraction=0.0)
    byte_shards = workdir / f"shards-bytes-{size}"
    optimize_bytes = timed(optimize_folder, folder, byte_shards, val_fraction=0.05, test_fraction=0.0,
                           decoded="none")
    figures: dict[str, Any] = {"images": size, "scan_first_s": scan_first, "scan_second_s": scan_second,
                               "optimize_s": optimize, "optimize_bytes_s": optimize_bytes,
                               "shard_mib": _mib(shards), "byte_shard_mib": _mib(byte_shards)}
    cold = workdir / f"zoo-cache-{size}"  # the folder runs' own cache: empty before the first
    sources = {"folder-first": (folder, "disk", cold), "folder-second": (folder, "disk", cold),
               "folder-memory": (folder, "memory", cold), "shards": (shards, "auto", workdir / "shard-cache"),
               "shards-bytes": (byte_shards, "auto", workdir / "shard-cache")}
    for name, (data, cache, zoo_cache) in sources.items():
        figures[name] = run_child(data, cache, steps, workdir / f"run-{size}-{name}", zoo_cache)
        figures[name]["speeds"] = [figures[name]["images_per_s"]]
        print(f"{size} {name}: {figures[name]}", flush=True)
    for round_index in range(1, speed_rounds):
        for name in SPEED_RUNS:
            data, cache, zoo_cache = sources[name]
            out = workdir / f"run-{size}-{name}-{round_index}"
            figures[name]["speeds"].append(run_child(data, cache, steps, out, zoo_cache)["images_per_s"])
            shutil.rmtree(out, ignore_errors=True)
        print(f"{size} speeds, round {round_index + 1}: "
              f"{ {name: round(figures[name]['speeds'][-1]) for name in SPEED_RUNS} }", flush=True)
    return figures


def _mib(folder: Path) -> float:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file()) / 2**20


def slope(sizes: list[int], seconds: list[float]) -> tuple[float, float]:
    """Least-squares ``(seconds per 1,000 images, intercept in seconds)``."""
    per_image, intercept = np.polyfit(np.array(sizes, dtype=float), np.array(seconds), 1)
    return per_image * 1000, intercept


def report(results: list[dict[str, Any]], load: str) -> str:
    rows = []
    for item in results:
        for name in RUNS:
            run = item[name]
            rows.append({
                "images": f"{item['images']:,}", "run": name,
                "scan first / second (s)": f"{item['scan_first_s']:.1f} / {item['scan_second_s']:.2f}"
                if name == "folder-first" else "",
                "optimize (s), shards MiB": f"{item['optimize_s']:.1f}, {item['shard_mib']:.0f}" if name == "shards"
                else f"{item['optimize_bytes_s']:.1f}, {item['byte_shard_mib']:.0f}" if name == "shards-bytes"
                else "",
                "first step (s)": f"{run['first_step_s']:.1f}",
                "peak RSS MiB (workers)": f"{run['peak_rss_mib']:.0f} ({run['worker_peak_rss_mib']:.0f})",
                "train img/s": spread(run["speeds"], 0),
                "val error % (chance 90)": f"{run['val_error']:.1f}",
            })
    sizes = [item["images"] for item in results]
    lines = [table(rows), ""]
    fits = {"scan, first run": [item["scan_first_s"] for item in results],
            "scan, second run (cached)": [item["scan_second_s"] for item in results],
            "zoo data optimize": [item["optimize_s"] for item in results],
            "first step, folder, first run": [item["folder-first"]["first_step_s"] for item in results],
            "first step, folder, second run": [item["folder-second"]["first_step_s"] for item in results],
            "first step, shards": [item["shards"]["first_step_s"] for item in results]}
    lines += ["| cost | s per 1k images | intercept (s) | extrapolated to 1.28M images |", "|---|---|---|---|"]
    for name, seconds in fits.items():
        per_thousand, intercept = slope(sizes, seconds)
        at_imagenet = per_thousand * IMAGENET / 1000 + intercept
        lines.append(f"| {name} | {per_thousand:.3f} | {intercept:.1f} | {at_imagenet / 60:.1f} min |")
    largest, smallest = results[-1], results[0]
    second_share = largest["folder-second"]["first_step_s"] / largest["folder-first"]["first_step_s"]
    rss_growth = largest["shards"]["peak_rss_mib"] / smallest["shards"]["peak_rss_mib"] - 1
    speed_ratios = [_paired_ratios(item, "shards") for item in results]
    byte_ratios = [_paired_ratios(item, "shards-bytes") for item in results]
    verdict = lambda ok: "met" if ok else "MISSED"  # noqa: E731
    lines += [
        "",
        f"- second run on the unchanged {largest['images']:,}-image folder reaches its first step in "
        f"{second_share:.1%} of the first run's time (target <= 10%: {verdict(second_share <= 0.10)})",
        f"- peak RSS on shards, {smallest['images']:,} -> {largest['images']:,} images: {rss_growth:+.1%} "
        f"(target within 20%: {verdict(abs(rss_growth) <= 0.20)})",
        f"- training images/s on shards (zoo data optimize's default: these 32 px images stored decoded) / in-memory "
        f"folder, median (min–max) of {len(speed_ratios[0])} rounds in turns: "
        f"{', '.join(_percent_spread(ratios) for ratios in speed_ratios)} "
        f"(target >= 90%: {verdict(min(median(ratios) for ratios in speed_ratios) >= 0.90)})",
        f"- the same on shards of the files' bytes (zoo data optimize --decoded none), decoded as they stream: "
        f"{', '.join(_percent_spread(ratios) for ratios in byte_ratios)}",
        f"- every run learned the task (validation error under 10%): "
        f"{verdict(all(item[name]['val_error'] < 10 for item in results for name in RUNS))}",
        f"- load average before / after: {load}",
    ]
    return "\n".join(lines)


def _paired_ratios(item: dict[str, Any], name: str) -> list[float]:
    """Each round's images/s of run ``name`` over the in-memory folder's in the same round."""
    return [run / memory for run, memory in zip(item[name]["speeds"], item["folder-memory"]["speeds"], strict=True)]


def _percent_spread(ratios: list[float]) -> str:
    return f"{median(ratios):.0%}" + (f" ({min(ratios):.0%}–{max(ratios):.0%})" if len(ratios) > 1 else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 30_000, 100_000])
    parser.add_argument("--steps", type=int, default=60, help="training steps of each run (batches of 64)")
    parser.add_argument("--speed-rounds", type=int, default=3,
                        help="rounds in turns of the three speed runs (the folder in memory, both shards)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not 1 <= args.speed_rounds <= MAX_SPEED_ROUNDS:
        parser.error(f"--speed-rounds {args.speed_rounds}: give 1 to {MAX_SPEED_ROUNDS} rounds")
    for size in args.sizes:
        if not MIN_SIZE <= size <= MAX_SIZE:
            parser.error(f"--sizes {size}: give {MIN_SIZE:,} to {MAX_SIZE:,} images (a validation share of each class)")
    if not WARMUP_STEPS < args.steps <= MAX_STEPS:
        parser.error(f"--steps {args.steps}: give {WARMUP_STEPS + 1} to {MAX_STEPS} (the speed is measured after "
                     f"{WARMUP_STEPS} warm-up steps)")
    if args.child:
        child(json.loads(args.child))
        return
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    workdir = Path(tempfile.mkdtemp(prefix="zoo-scale-"))
    try:
        started = time.perf_counter()
        folders = make_folders(workdir, sorted(args.sizes))
        print(f"wrote {max(args.sizes):,} images in {time.perf_counter() - started:.0f} s", flush=True)
        results = [measure(size, folders[size], workdir, args.steps, args.speed_rounds) for size in sorted(args.sizes)]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    load = f"{' '.join(load_before)} / {' '.join(Path('/proc/loadavg').read_text().split()[:3])}"
    body = report(results, load)
    print(body)
    write_results("scale", "Scale: scan, preparation, first step, memory and speed from 10k to 100k images", body)


if __name__ == "__main__":
    main()
