"""Accuracy parity: zoo's fast defaults reach the validation error of fp32 NCHW without caching.

    python -m benchmarks.accuracy_parity [--epochs 20] [--seeds 0 1 2] [--augment none]

small_cnn from scratch on digits (``configs/small_cnn-digits.yaml``), trained to convergence, twice
per seed, the order alternating: ``default`` (precision and memory format ``auto``: here what
``choose_precision`` and ``choose_memory_format`` pick, and the decode-once cache) and ``fp32 NCHW``
(``--precision 32 --memory-format contiguous --cache none``). The figure is the mean over seeds of
the final epoch's validation error; short runs vary by many points between seeds and prove nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
from pathlib import Path

from benchmarks.common import silenced, table, write_results
from finetune.config import load_config, merge
from finetune.runtime.hardware import choose_precision
from finetune.training.run import train

CONFIG = Path(__file__).parents[1] / "configs" / "small_cnn-digits.yaml"
VARIANTS = {
    "default": {},
    "fp32 NCHW": {"trainer": {"precision": "32"}, "model": {"memory_format": "contiguous"}, "data": {"cache": "none"}},
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--augment", choices=("none", "standard"), default="none",
                        help="standard compares the batched crops of the cache with torchvision's per-image crops")
    args = parser.parse_args(argv)
    final: dict[str, list[float]] = {name: [] for name in VARIANTS}
    best: dict[str, list[float]] = {name: [] for name in VARIANTS}
    seconds: dict[str, list[float]] = {name: [] for name in VARIANTS}
    names = list(VARIANTS)
    with tempfile.TemporaryDirectory(prefix="zoo-bench-") as workdir:
        for index, seed in enumerate(args.seeds):
            for name in names[index % 2 :] + names[: index % 2]:
                overrides = {"trainer": {"epochs": args.epochs, "seed": seed, "accelerator": "cpu"},
                             "data": {"augment": args.augment}}
                config = merge(merge(load_config(CONFIG), overrides), VARIANTS[name])
                config = dataclasses.replace(config, out=str(Path(workdir) / f"{name.replace(' ', '-')}-{seed}"))
                with silenced():
                    summary = train(config).summary
                    assert summary is not None  # one process: it reports
                final[name].append(summary.final_val_top1_error)
                best[name].append(summary.val_top1_error)
                seconds[name].append(summary.train_seconds)
                print(f"seed {seed}: {name}: final val error {final[name][-1]:.2f} %, best {best[name][-1]:.2f} %, "
                      f"{seconds[name][-1]:.0f} s training", flush=True)
    rows = [{
        "variant": name,
        "settings": "precision auto → " + choose_precision("auto", "cpu").value + ", channels_last, cache auto"
                    if name == "default" else "precision 32, contiguous (NCHW), cache none",
        "final val error % (mean of seeds)": f"{statistics.mean(final[name]):.2f}",
        "per seed": ", ".join(f"{error:.2f}" for error in final[name]),
        "best epoch's error % (mean)": f"{statistics.mean(best[name]):.2f}",
        "training s (mean)": f"{statistics.mean(seconds[name]):.0f}",
    } for name in VARIANTS]
    gap = statistics.mean(final["default"]) - statistics.mean(final["fp32 NCHW"])
    print("\n" + table(rows) + f"\n\ndefault − fp32 NCHW: {gap:+.2f} points")
    body = (f"small_cnn on digits (configs/small_cnn-digits.yaml, augment {args.augment}), {args.epochs} epochs, "
            f"seeds {', '.join(map(str, args.seeds))} (each seed its own split); the variants alternate.\n\n"
            f"{table(rows)}\n\ndefault − fp32 NCHW, mean final error: **{gap:+.2f} points** (target: within ±1).")
    write_results(f"accuracy_parity_{args.augment}", f"accuracy_parity (augment {args.augment}): default vs fp32 NCHW",
                  body)


if __name__ == "__main__":
    main()
