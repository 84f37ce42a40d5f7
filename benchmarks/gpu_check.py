"""One prepared call for a machine with a GPU: the train_throughput table on CUDA, then a 2-epoch resnet50 fine-tune.

    python -m benchmarks.gpu_check [--batch-size 64] [--rounds 2]

zoo picks bf16-mixed and channels_last on a GPU with bf16 (it says so in the table's first line).
The fine-tune runs ``zoo finetune``'s ``train`` on the full digits data set at 224 px with resnet50's
ImageNet weights when they are in the torch hub cache, else from scratch (the machine may be offline).
Everything lands in the ``gpu_check`` section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

import zoo
from benchmarks.common import StepTimes, digits_folder, median, silenced, table, write_results
from benchmarks.train_throughput import MODELS, Settings, measure
from finetune.config import DataConfig, ModelConfig, RunConfig, TrainerConfig
from finetune.training.run import train


def fine_tune(workdir: Path, batch_size: int) -> dict[str, object]:
    """A 2-epoch resnet50 fine-tune on digits: its figures as one table row."""
    spec = zoo.get_spec("resnet50")
    assert spec.weights is not None
    cached = any(info.cached for info in spec.weights.available() if info.tag == spec.weights.default_tag)
    folder = digits_folder(workdir / "digits", train_per_class=140, val_per_class=34)
    timer = StepTimes()
    config = RunConfig(data=DataConfig(path=str(folder), batch_size=batch_size),
                       model=ModelConfig(arch="resnet50", weights="default" if cached else "none"),
                       trainer=TrainerConfig(epochs=2, accelerator="gpu"), out=str(workdir / "resnet50"))
    started = time.perf_counter()
    with silenced():
        summary = train(config, watchers=[timer]).summary
        assert summary is not None  # one process: it reports
    later = timer.step_seconds(epoch=-1)
    return {
        "weights": summary.weights,
        "precision": summary.precision,
        "memory format": summary.memory_format,
        "epochs": summary.epochs,
        "val top-1 error %": summary.final_val_top1_error,
        "train img/s (run)": summary.train_images_per_second,
        "img/s, epoch 2 steps (median)": round(batch_size / median(later), 1),
        "wall s": round(time.perf_counter() - started, 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=5.0, help="aim for this long per throughput run")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("gpu_check needs a CUDA device; on CPU run python -m benchmarks.train_throughput")
    with tempfile.TemporaryDirectory(prefix="zoo-gpu-check-") as folder:
        workdir = Path(folder)
        settings = Settings(torch.device("cuda"), args.batch_size, warmup=5, steps=10, rounds=args.rounds,
                            workdir=workdir)
        rows, chosen = measure(list(MODELS), settings, args.seconds)
        print("\n" + table(rows), flush=True)
        tuned = fine_tune(workdir, args.batch_size)
    print("\n" + table([tuned]))
    body = (f"### train_throughput on CUDA\nbatch {args.batch_size}, 5 warm-up + at least 10 timed steps per run, "
            f"{args.rounds} rounds, median (min–max).\n{chosen}\n\n{table(rows)}\n\n"
            f"### resnet50, 2 epochs on digits at 224 px\n\n{table([tuned])}")
    write_results("gpu_check", "gpu_check: CUDA, bf16-mixed + channels_last", body)


if __name__ == "__main__":
    main()
