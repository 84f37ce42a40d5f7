"""Wall time a user waits for: the registry commands against a torch import, and where a run's time goes.

    python -m benchmarks.wall_time [--rounds 3] [--max-steps 20]

1. ``zoo list``, ``zoo info resnet50`` and ``zoo weights resnet50`` against ``python -c "import torch"``,
   interleaved, each a fresh process: the median seconds and their ratio (target: at most 0.3).
2. Two ``zoo finetune`` commands timed with a stopwatch around the process: the README's main job (small_cnn on
   digits, no other flag) and 3,000 test images of 32 px (digits drawn at 32 px with noise: 1,000 train, 500 val,
   3,000 test, ``--max-steps``). From ``summary.json``: ``wall_seconds`` and the sum of ``phase_seconds`` as a
   share of the stopwatch (target 95-105%), and the held-out measurement with calibration against training
   (target: at most 10% of training on the main job, at most 2 s for the 3,000 test images).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.common import interleaved, median, spread, table, write_results

REGISTRY = {
    "python -c 'import torch'": [sys.executable, "-c", "import torch"],
    "zoo list": [sys.executable, "-m", "zoo_cli.main", "list"],
    "zoo info resnet50": [sys.executable, "-m", "zoo_cli.main", "info", "resnet50"],
    "zoo weights resnet50": [sys.executable, "-m", "zoo_cli.main", "weights", "resnet50"],
}


def stopwatch(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started


def registry(rounds: int) -> list[dict[str, object]]:
    seconds: dict[str, list[float]] = {name: [] for name in REGISTRY}
    for _, name in interleaved(list(REGISTRY), rounds):
        seconds[name].append(stopwatch(REGISTRY[name]))
    torch_import = median(seconds["python -c 'import torch'"])
    return [{"command": name, "seconds, median (min–max)": spread(times, 2),
             "× import torch": round(median(times) / torch_import, 2)} for name, times in seconds.items()]


def digits_at_32(root: Path) -> Path:
    """sklearn's digits drawn at 32 px with noise: 1,000 train, 500 val and 3,000 test PNGs."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(0)
    for part, count in (("train", 1000), ("val", 500), ("test", 3000)):
        for number, index in enumerate(rng.integers(0, len(digits.images), count)):
            folder = root / part / str(digits.target[index])
            folder.mkdir(parents=True, exist_ok=True)
            glyph = Image.fromarray((digits.images[index] / 16 * 255).astype(np.uint8)).resize((32, 32))
            pixels = np.asarray(glyph) // 2 + rng.integers(0, 30, (32, 32), dtype=np.uint8)
            Image.fromarray(pixels.astype(np.uint8)).convert("RGB").save(folder / f"{number}.png")
    return root


def run(name: str, flags: list[str], out: Path) -> dict[str, object]:
    seconds = stopwatch([sys.executable, "-m", "zoo_cli.main", "finetune", *flags, "--out", str(out)])
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    phases = summary["phase_seconds"]
    measuring = phases.get("held_out", 0.0) + phases.get("calibration", 0.0)
    return {
        "run": name, "stopwatch s": round(seconds, 1), "wall_seconds": round(summary["wall_seconds"], 1),
        "sum of phases s": round(sum(phases.values()), 1),
        "phases / stopwatch": f"{100 * sum(phases.values()) / seconds:.1f}%",
        "startup s": phases.get("startup"), "train s": phases.get("train"),
        "held_out + calibration s": round(measuring, 2),
        "of training": f"{100 * measuring / phases['train']:.1f}%",
        "test images": summary["num_test"],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-steps", type=int, default=20, help="steps of the 3,000-test-image run")
    args = parser.parse_args(argv)
    load = Path("/proc/loadavg").read_text().split()[:3]
    commands = registry(args.rounds)
    print(table(commands), flush=True)
    with tempfile.TemporaryDirectory(prefix="zoo-wall-time-") as folder:
        workdir = Path(folder)
        images = digits_at_32(workdir / "digits32")
        runs = [run("README main job: --arch small_cnn --data digits", ["--arch", "small_cnn", "--data", "digits"],
                    workdir / "main"),
                run(f"3,000 test images of 32 px, --max-steps {args.max_steps}",
                    ["--arch", "small_cnn", "--data", str(images), "--max-steps", str(args.max_steps)],
                    workdir / "small")]
    print(table(runs), flush=True)
    load_after = Path("/proc/loadavg").read_text().split()[:3]
    body = (f"Load average before {' '.join(load)}, after {' '.join(load_after)} (2 shared cores: other work ran "
            f"beside this).\n\n### Registry commands against a torch import\n{args.rounds} interleaved rounds, each "
            f"command a fresh process (target: at most 0.3× the import).\n\n{table(commands)}\n\n"
            "### Where a run's wall time goes\nstopwatch around the `zoo finetune` process; phases from "
            "summary.json (target: 95–105% of the stopwatch; held-out measurement and calibration at most 10% of "
            f"training on the main job, at most 2 s for 3,000 test images of 32 px).\n\n{table(runs)}")
    write_results("wall_time", "wall_time: what a user waits for", body)


if __name__ == "__main__":
    main()
