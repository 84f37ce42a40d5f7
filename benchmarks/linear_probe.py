"""Linear probe: 10 epochs of naive frozen-backbone training against the feature cache, on digits.

    python -m benchmarks.linear_probe [--arch efficientnet_lite0] [--image-size 224] [--per-class 100] [--rounds 2]

``configs/linear-probe.yaml`` (frozen backbone, no augmentation, lr 0.01, 10 epochs) with a pretrained
backbone whose weights ship with zoo's dependencies (efficientnet_lite0; resnet50's need a download).
Three variants, their order rotating each round: ``naive`` (``--cache none``: the backbone runs every
epoch), ``cache, first run`` (features computed, then 10 epochs on them) and ``cache, second run``
(features read back). Time: the whole ``train(config)`` call, as a user waits for it.

Images are fed at the architecture's own input size (what ``zoo finetune`` uses unless told otherwise).
Every run also pays costs the cache cannot remove (scanning the folder, building the model, Lightning's
loop over the head's batches, checkpoints, the plot): at a smaller ``--image-size`` the backbone pass
shrinks and those weigh more, so the speed-up falls further below the 10× limit.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from pathlib import Path

import zoo
from benchmarks.common import digits_folder, interleaved, median, silenced, spread, table, write_results
from finetune.config import load_config, merge
from finetune.training.run import train

VARIANTS = ("naive", "cache, first run", "cache, second run")
CONFIG = Path(__file__).parents[1] / "configs" / "linear-probe.yaml"


def run_once(config_overrides: dict, cache: str, out: Path) -> tuple[float, float]:
    """Seconds of one ``train`` call and its final validation top-1 error."""
    config = merge(load_config(CONFIG), config_overrides)
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, cache=cache), out=str(out))
    started = time.perf_counter()
    with silenced():
        summary = train(config).summary
        assert summary is not None  # one process: it reports
    return time.perf_counter() - started, summary.final_val_top1_error


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="efficientnet_lite0")
    parser.add_argument("--image-size", type=int, default=None, help="the architecture's input size unless given")
    parser.add_argument("--per-class", type=int, default=100,
                        help="digits per class (80%% train, 20%% val); 174 is all")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="zoo-bench-") as workdir:
        val = args.per_class // 5
        folder = digits_folder(Path(workdir) / "digits", train_per_class=args.per_class - val, val_per_class=val)
        image_size = args.image_size or zoo.get_spec(args.arch).input_size
        overrides = {"data": {"path": str(folder), "image_size": image_size, "batch_size": args.batch_size},
                     "model": {"arch": args.arch}, "trainer": {"accelerator": "cpu"}}
        seconds: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
        errors: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
        for run, variant in interleaved(VARIANTS, args.rounds):
            # A first run starts from an empty cache folder; a second run reads one an untimed run just filled.
            os.environ["ZOO_CACHE"] = str(Path(workdir) / f"cache-{run}-{VARIANTS.index(variant)}")
            if variant == "cache, second run":
                run_once(overrides, "auto", Path(workdir) / f"fill-{run}")
            cache = "none" if variant == "naive" else "auto"
            elapsed, error = run_once(overrides, cache, Path(workdir) / f"run-{run}-{VARIANTS.index(variant)}")
            seconds[variant].append(elapsed)
            errors[variant].append(error)
            print(f"round {run}: {variant}: {elapsed:.1f} s, final val error {error:.2f} %", flush=True)
    naive = seconds["naive"]
    rows = [{
        "variant": variant,
        "10 epochs, s": spread(seconds[variant]),
        "speed-up vs naive": spread([n / s for n, s in zip(naive, seconds[variant], strict=True)]) + "×",
        "final val top-1 error %": spread(errors[variant], 2),
    } for variant in VARIANTS]
    print("\n" + table(rows))
    body = (f"{args.arch} (pretrained) at {image_size} px, digits {args.per_class - val}+{val} images per class "
            f"(train+val), batch {args.batch_size}, configs/linear-probe.yaml; {args.rounds} rounds, order rotating; "
            f"median (min–max).\n\n{table(rows)}\n\nDifference of the median final errors, cache (first run) − naive: "
            f"{median(errors['cache, first run']) - median(errors['naive']):+.2f} points.")
    write_results(f"linear_probe_{image_size}",
                  f"linear_probe ({args.arch} at {image_size} px): naive frozen training vs the feature cache", body)


if __name__ == "__main__":
    main()
