"""Seconds per epoch spent waiting for data, with and without the decode-once image cache.

    python -m benchmarks.data_pipeline [--epochs 3] [--rounds 2] [--datasets digits photos]

small_cnn (zoo's defaults otherwise: batch 32, standard augmentation) trains with ``--cache none`` and
``--cache memory``, the runs alternating. A step waits for data while the DataLoader produces its
batch; the gap before a step adds Lightning's work between steps (``StepTimes``). An epoch's figures
are the sums over its steps (validation excluded). The cache is filled before the first epoch: its
build time is measured separately, on the same data. ``digits``: the built-in 8×8 PNGs; ``photos``:
500×375 JPEGs.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import zoo
from benchmarks.common import (
    StepTimes,
    digits_folder,
    interleaved,
    median,
    photos_folder,
    silenced,
    spread,
    table,
    write_results,
)
from finetune.config import DataConfig, ModelConfig, RunConfig, TrainerConfig
from finetune.data.datamodule import ImageDataModule
from finetune.data.split import split_folder
from finetune.training.run import train

CACHES = ("none", "memory")
ARCH = "small_cnn"


def make_data(name: str, workdir: Path) -> Path:
    if name == "digits":
        return digits_folder(workdir / "digits", train_per_class=140, val_per_class=34)
    return photos_folder(workdir / "photos", classes=10, per_class=50)


def build_seconds(folder: Path) -> float:
    """Seconds to fill the memory cache of the train and val images (what a cached run does before epoch 1)."""
    data = ImageDataModule(split_folder(folder), zoo.get_spec(ARCH), 28, DataConfig(cache="memory"))
    started = time.perf_counter()
    data.setup("fit")
    return time.perf_counter() - started


def epochs_of(folder: Path, cache: str, epochs: int, workdir: Path, run: int) -> list[tuple[float, float, float]]:
    """``(data seconds, gap seconds, train seconds)`` of each epoch of one run."""
    timer = StepTimes()
    config = RunConfig(data=DataConfig(path=str(folder), cache=cache), model=ModelConfig(arch=ARCH),
                       trainer=TrainerConfig(epochs=epochs, accelerator="cpu", seed=run),
                       out=str(workdir / f"run-{folder.name}-{cache}-{run}"))
    with silenced():
        train(config, watchers=[timer])
    return [tuple(map(sum, zip(*steps, strict=True))) for steps in timer.epochs]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", choices=("digits", "photos"), default=["digits", "photos"])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="zoo-bench-") as workdir:
        for name in args.datasets:
            folder = make_data(name, Path(workdir))
            builds = []
            first: dict[str, list[tuple[float, float, float]]] = {cache: [] for cache in CACHES}
            later: dict[str, list[tuple[float, float, float]]] = {cache: [] for cache in CACHES}
            for run, cache in interleaved(CACHES, args.rounds):
                epochs = epochs_of(folder, cache, args.epochs, Path(workdir), run)
                first[cache].append(epochs[0])
                later[cache] += epochs[1:]
                if cache == "memory":
                    builds.append(build_seconds(folder))
            for cache in CACHES:
                data, gaps, totals = zip(*later[cache], strict=True)
                rows.append({
                    "data": f"{name} ({sum(1 for _ in folder.rglob('*.*'))} images)",
                    "cache": cache,
                    "cache build s (once)": spread(builds, 2) if cache == "memory" else "–",
                    "epoch 1: data s / train s": f"{median([e[0] for e in first[cache]]):.2f} / "
                                                 f"{median([e[2] for e in first[cache]]):.2f}",
                    "later epochs: data s / train s": f"{spread(data, 2)} / {spread(totals, 2)}",
                    "later epochs: % waiting for data":
                        spread([100 * d / t for d, t in zip(data, totals, strict=True)]),
                    "later epochs: % between steps (data + Lightning)":
                        spread([100 * g / t for g, t in zip(gaps, totals, strict=True)]),
                })
                print(table(rows[-1:]), flush=True)
    body = (f"{ARCH} at 28 px, batch 32, standard augmentation, {args.epochs} epochs per run, {args.rounds} runs "
            f"per variant (alternating); median (min–max) over runs and epochs.\n\n{table(rows)}")
    print("\n" + table(rows))
    write_results("data_pipeline", "data_pipeline: time waiting for data, decode-once cache vs none", body)


if __name__ == "__main__":
    main()
