"""Training images/s of zoo's thread choice against the same run pinned to torch's default thread count,
on a quiet machine and beside as many busy processes as cores.

    python -m benchmarks.threads [--arch small_cnn] [--steps 60] [--rounds 2]

Each run is the real command, ``zoo finetune`` (from scratch on digits, ``--max-steps`` steps) in a fresh
process without ``OMP_NUM_THREADS``: ``zoo`` chooses its threads, ``pinned`` adds ``--threads N`` with N torch's
default in such a process. The figure is ``train_images_per_second`` of ``summary.json`` (training steps and
data loading, validation excluded). In each round the two run in turns (the order alternating), quiet first,
then beside busy processes (``while True: pass``, one per usable core), started a few seconds before. The load
average is read after each pair: on a machine shared with other jobs "quiet" is only as quiet as they are.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import digits_folder, median, spread, table, write_results
from finetune.runtime.hardware import usable_cores

VARIANTS = ("zoo", "pinned")
TARGETS = {"quiet": 0.95, "busy": 2.0}  # zoo ÷ pinned: lose nothing (within 5%) quiet, twice as fast beside load


def _environment() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if name != "OMP_NUM_THREADS"}


def torch_default_threads() -> int:
    """torch's thread count in a fresh process without ``OMP_NUM_THREADS``: what a run got before zoo chose."""
    result = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                            capture_output=True, text=True, check=True, env=_environment())
    return int(result.stdout)


def _spin() -> None:
    while True:
        pass


def run(folder: Path, out: Path, arch: str, steps: int, threads: int | None) -> tuple[float, int]:
    """Images/s of one ``zoo finetune`` run and the threads it trained on."""
    command = [sys.executable, "-m", "zoo_cli.main", "finetune", "--arch", arch, "--weights", "none", "--data",
               str(folder), "--epochs", "1000", "--max-steps", str(steps), "--accelerator", "cpu", "--out", str(out),
               *(["--threads", str(threads)] if threads else [])]
    result = subprocess.run(command, capture_output=True, text=True, env=_environment())
    if result.returncode:
        raise RuntimeError(f"{' '.join(command)} failed: {result.stderr[-500:]}")
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    return float(summary["train_images_per_second"]), int(summary["config"]["trainer"]["threads"])


def measure(folder: Path, workdir: Path, arch: str, steps: int, rounds: int, pinned: int,
            condition: str) -> dict[str, object]:
    speed: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    chosen, loads = [], []
    for index in range(rounds):
        for variant in VARIANTS if index % 2 == 0 else VARIANTS[::-1]:
            images_per_second, threads = run(folder, workdir / f"{condition}-{variant}-{index}", arch, steps,
                                             None if variant == "zoo" else pinned)
            speed[variant].append(images_per_second)
            if variant == "zoo":
                chosen.append(threads)
            print(f"{condition} {variant}: {images_per_second:.0f} img/s on {threads} threads", flush=True)
        loads.append(os.getloadavg()[0])
    ratios = [z / p for z, p in zip(speed["zoo"], speed["pinned"], strict=True)]
    return {
        "machine": "no busy processes added (quiet only if the load average says so)" if condition == "quiet"
                   else f"beside {usable_cores()} busy processes added",
        "zoo threads (chosen)": ", ".join(map(str, chosen)),
        "zoo img/s": spread(speed["zoo"], 0),
        f"pinned to {pinned} img/s": spread(speed["pinned"], 0),
        "zoo ÷ pinned": spread(ratios, 2) + "×",
        "target": f"≥ {TARGETS[condition]:g}×",
        # zoo choosing fewer threads than torch's default means it saw other processes: not a quiet measurement.
        "met": ("not measured: zoo saw busy cores" if condition == "quiet" and min(chosen) < pinned
                else "yes" if median(ratios) >= TARGETS[condition] else "no"),
        "load average (1 min) after each pair": ", ".join(f"{load:.1f}" for load in loads),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="small_cnn")
    parser.add_argument("--steps", type=int, default=60, help="training steps per run (batch 32)")
    parser.add_argument("--rounds", type=int, default=2, help="pairs of runs per condition")
    args = parser.parse_args(argv)
    pinned = torch_default_threads()
    rows = []
    with tempfile.TemporaryDirectory(prefix="zoo-threads-") as workdir:
        folder = digits_folder(Path(workdir) / "digits", train_per_class=120, val_per_class=20)
        start = open("/proc/loadavg").read().strip() if Path("/proc/loadavg").is_file() else "unknown"
        rows.append(measure(folder, Path(workdir), args.arch, args.steps, args.rounds, pinned, "quiet"))
        spinners = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(usable_cores())]
        for spinner in spinners:
            spinner.start()
        try:
            time.sleep(3)  # zoo looks at the cores' use of the moment, not the load average of the last minute
            rows.append(measure(folder, Path(workdir), args.arch, args.steps, args.rounds, pinned, "busy"))
        finally:
            for spinner in spinners:
                spinner.terminate()
                spinner.join()
    body = (f"`zoo finetune --arch {args.arch} --weights none` on 1,200 digits, {args.steps} steps of 32 images per "
            f"run, {args.rounds} rounds (the two variants in turns); median (min–max) over rounds. Pinned: "
            f"`--threads {pinned}`, torch's default in a process without OMP_NUM_THREADS. /proc/loadavg at the start: "
            f"{start}.\n\n{table(rows)}")
    print("\n" + body)
    write_results("threads", "threads: zoo's thread choice against torch's default, quiet and beside busy processes",
                  body)


if __name__ == "__main__":
    main()
