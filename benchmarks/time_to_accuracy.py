"""Time to accuracy: zoo's no-flag run against fastai's recommended recipe, same network, same files, same threads.

    python -m benchmarks.time_to_accuracy [--data mnist faces textures] [--zoo-epochs 5 10] [--fastai-epochs 5 10]
                                          [--fastai-epochs-pretrained 3] [--rounds 1]

Each data set is split once by zoo (seed 0) into train/ val/ test/ folders that both systems read. zoo runs as the
user runs it: ``zoo finetune --arch ARCH --data DIR`` (its own epochs, learning rate, augmentation and precision),
plus ``--epochs N`` budgets. fastai gets zoo's own ``nn.Module`` (``zoo.create_model``, the same architecture and
initial weights) in a ``Learner``, and its recommended recipe: ``lr_find`` then ``fit_one_cycle(N)`` from scratch,
``fine_tune(N)`` (head first, then all; the head as zoo's entry names it) for pretrained weights, at the image size
zoo chose, ``aug_transforms`` for photos. Every run is a fresh process, timed from its start to its end (imports
included), with ``OMP_NUM_THREADS`` set alike; the systems alternate. Test errors are on the same test files.

The figure: the best test error both systems reach (the larger of their best errors), the wall seconds each needs
to reach it (its quickest run at or below it), and zoo's time over fastai's (target: at most 0.5).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import table, write_results
from benchmarks.defaults import faces_folder, mnist_folder, textures_folder

# name -> (architecture, weights, folder builder, photos: fastai's aug_transforms)
DATASETS = {
    "mnist": ("small_cnn", "none", mnist_folder, False),
    "faces": ("small_cnn", "none", faces_folder, False),
    "textures": ("efficientnet_lite0", "default", textures_folder, True),
}


def split_into_folders(source: Path, root: Path) -> Path:
    """zoo's split of ``source`` (seed 0) as ``root/train``, ``root/val`` and ``root/test`` (hard links)."""
    from finetune.data.split import split_folder

    split = split_folder(source, seed=0)
    for part in ("train", "val", "test"):
        for sample in getattr(split, part):
            target = root / part / split.classes[sample.label] / sample.path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(sample.path, target)
            except OSError:
                shutil.copy(sample.path, target)
    return root


def zoo_run(folder: Path, arch: str, weights: str, epochs: int | None, out: Path) -> dict[str, Any]:
    command = [sys.executable, "-m", "zoo_cli.main", "finetune", "--arch", arch, "--data", str(folder),
               "--out", str(out)]
    if weights != "default":
        command += ["--weights", weights]  # zoo's default is the entry's default weights
    if epochs is not None:
        command += ["--epochs", str(epochs)]
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    seconds = time.perf_counter() - started
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    return {"system": "zoo", "epochs": summary["epochs"], "flags": "" if epochs is None else f"--epochs {epochs}",
            "seconds": seconds, "error": summary["test_top1_error"], "image_size": summary["image_size"]}


def fastai_run(folder: Path, arch: str, weights: str, epochs: int, image_size: int, photos: bool,
               result: Path) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.time_to_accuracy", "--fastai-run", json.dumps(
        {"folder": str(folder), "arch": arch, "weights": weights, "epochs": epochs, "image_size": image_size,
         "photos": photos, "result": str(result)})]
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    seconds = time.perf_counter() - started
    figures = json.loads(result.read_text(encoding="utf-8"))
    recipe = "fine_tune" if weights != "none" else "fit_one_cycle"
    return {"system": "fastai", "epochs": epochs, "flags": f"lr_find + {recipe}({epochs})", "seconds": seconds,
            "error": figures["error"], "image_size": image_size}


def fastai_train(settings: dict[str, Any]) -> None:
    """In its own process: fastai's recipe on zoo's network; writes the test error to ``settings['result']``."""
    import torch
    from fastai.vision.all import (
        CategoryBlock,
        CrossEntropyLossFlat,
        DataBlock,
        ImageBlock,
        Learner,
        Normalize,
        Resize,
        aug_transforms,
        error_rate,
        get_image_files,
        parent_label,
    )

    import zoo

    folder = Path(settings["folder"])
    spec = zoo.get_spec(settings["arch"])
    train = get_image_files(folder / "train")
    val = get_image_files(folder / "val")
    validation = set(val)
    mean, std = spec.mean, spec.std
    if settings["weights"] != "none":
        from zoo.weights.loading import weights_preprocessing

        chosen = weights_preprocessing(spec, settings["weights"])
        mean, std = chosen.mean, chosen.std
    batch = [*(aug_transforms() if settings["photos"] else []), Normalize.from_stats(list(mean), list(std))]
    block = DataBlock(blocks=(ImageBlock, CategoryBlock), get_y=parent_label,
                      splitter=lambda items: ([i for i, item in enumerate(items) if item not in validation],
                                              [i for i, item in enumerate(items) if item in validation]),
                      item_tfms=Resize(settings["image_size"]), batch_tfms=batch)
    loaders = block.dataloaders(list(train) + list(val), num_workers=0)
    network = zoo.create_model(spec.name, len(loaders.vocab),
                               weights=None if settings["weights"] == "none" else settings["weights"])
    heads = [network.get_submodule(head) for head in spec.heads]
    head_parameters = {id(p) for head in heads for p in head.parameters()}

    def groups(model: torch.nn.Module) -> list[list[torch.nn.Parameter]]:  # backbone, head: freeze() trains the head
        return [[p for p in model.parameters() if id(p) not in head_parameters],
                [p for head in heads for p in head.parameters()]]

    # path: lr_find saves its restore point under path/models, here in the benchmark's temporary folder.
    learner = Learner(loaders, network, loss_func=CrossEntropyLossFlat(), metrics=error_rate, splitter=groups,
                      path=folder)
    with learner.no_bar(), learner.no_logging():
        lr = learner.lr_find(show_plot=False).valley
        if settings["weights"] != "none":
            learner.fine_tune(settings["epochs"], base_lr=lr)
        else:
            learner.fit_one_cycle(settings["epochs"], lr)
        test = learner.dls.test_dl(get_image_files(folder / "test"), with_labels=True)
        predictions, targets = learner.get_preds(dl=test)
    error = 100.0 * float((predictions.argmax(dim=1) != targets).float().mean())
    Path(settings["result"]).write_text(json.dumps({"error": round(error, 4), "lr": lr}), encoding="utf-8")


def time_to(runs: list[dict[str, Any]], error: float) -> float | None:
    """The seconds of the quickest run at or below ``error``."""
    return min((run["seconds"] for run in runs if run["error"] <= error + 1e-9), default=None)


def _write(rows: list[dict[str, Any]], detail: list[dict[str, Any]], rounds: int, load: list[str]) -> None:
    load_after = Path("/proc/loadavg").read_text().split()[:3]
    # A run of either system keeps about as many cores busy as it has threads: more than that was other work.
    beside = " (other work ran beside this)" if float(load[0]) > 0.5 else " (nothing else ran before it)"
    body = (f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} for both; {rounds} round(s); load average before "
            f"{' '.join(load)}{beside}, after {' '.join(load_after)}. Target: zoo at most 0.5× fastai's wall "
            f"seconds.\n\n{table(rows)}\n\n### Every run\n\n{table(detail)}")
    write_results("time_to_accuracy", "time_to_accuracy: zoo's no-flag run against fastai's recipe", body)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", choices=list(DATASETS), default=list(DATASETS))
    parser.add_argument("--zoo-epochs", type=int, nargs="*", default=[], help="budgets besides zoo's own choice")
    parser.add_argument("--fastai-epochs", type=int, nargs="+", default=[5, 10])
    parser.add_argument("--fastai-epochs-pretrained", type=int, nargs="+",
                        help="fastai's budgets for the pretrained data sets (default: --fastai-epochs); its lr_find "
                             "alone trains 100 batches of the whole network")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--fastai-run", help=argparse.SUPPRESS)  # the child process of one fastai run
    args = parser.parse_args(argv)
    if args.fastai_run:
        fastai_train(json.loads(args.fastai_run))
        return
    from finetune.runtime.hardware import usable_cores

    os.environ["OMP_NUM_THREADS"] = str(usable_cores())  # both systems, every process: the same threads
    load = Path("/proc/loadavg").read_text().split()[:3]
    rows, detail = [], []
    with tempfile.TemporaryDirectory(prefix="zoo-time-to-accuracy-") as directory:
        workdir = Path(directory)
        for name in args.data:
            arch, weights, build, photos = DATASETS[name]
            folder = split_into_folders(build(workdir / f"{name}-source"), workdir / name)
            runs: list[dict[str, Any]] = []
            image_size = None
            zoo_jobs = [("zoo", budget) for budget in [None, *args.zoo_epochs]]
            budgets = args.fastai_epochs_pretrained if weights != "none" and args.fastai_epochs_pretrained else \
                args.fastai_epochs
            fastai_jobs = [("fastai", budget) for budget in budgets]
            for round_ in range(args.rounds):
                # Alternating, zoo first in even rounds: fastai takes the image size zoo chose.
                first, second = (zoo_jobs, fastai_jobs) if round_ % 2 == 0 else (fastai_jobs, zoo_jobs)
                jobs = [job for pair in itertools.zip_longest(first, second) for job in pair if job is not None]
                for index, (system, budget) in enumerate(jobs):
                    out = workdir / f"{name}-{system}-{round_}-{index}"
                    if system == "zoo":
                        runs.append(zoo_run(folder, arch, weights, budget, out))
                        image_size = runs[-1]["image_size"]
                    else:
                        assert image_size is not None
                        assert budget is not None
                        runs.append(fastai_run(folder, arch, weights, budget, image_size, photos,
                                               workdir / f"{out.name}.json"))
                    print(f"{name}: {system} {runs[-1]['flags'] or 'no flags'}: {runs[-1]['error']:.2f} % in "
                          f"{runs[-1]['seconds']:.1f} s", flush=True)
            zoo_runs = [run for run in runs if run["system"] == "zoo"]
            fastai_runs = [run for run in runs if run["system"] == "fastai"]
            both = max(min(run["error"] for run in zoo_runs), min(run["error"] for run in fastai_runs))
            zoo_seconds, fastai_seconds = time_to(zoo_runs, both), time_to(fastai_runs, both)
            assert zoo_seconds is not None
            assert fastai_seconds is not None
            rows.append({"data": f"{name} ({arch}, {'pretrained' if weights != 'none' else 'from scratch'})",
                         "best test error both reach %": f"{both:.2f}", "zoo s": f"{zoo_seconds:.1f}",
                         "fastai s": f"{fastai_seconds:.1f}", "zoo / fastai": f"{zoo_seconds / fastai_seconds:.2f}"})
            detail += [{"data": name, "system": run["system"], "run": run["flags"] or "no flags",
                        "epochs": run["epochs"], "image px": run["image_size"], "test error %": f"{run['error']:.2f}",
                        "wall s": f"{run['seconds']:.1f}"} for run in runs]
            _write(rows, detail, args.rounds, load)  # after each data set: a run cut short keeps what it measured
    print("\n" + table(rows) + "\n\n" + table(detail))

if __name__ == "__main__":
    main()
