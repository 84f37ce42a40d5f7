"""``zoo clean``: images probably filed under the wrong class, and near-duplicates, found without touching the folder.

Every image gets out-of-sample class probabilities from K-fold training of a linear head (logistic regression on
standardised features) on the features of a pretrained backbone, computed once per image and cached like a
linear probe's: about one backbone pass over the data. cleanlab's ``find_label_issues`` (confident learning,
Northcutt et al. 2021) picks the images whose label the other folds' heads disagree with, ranked by label
quality (the probability of the given label: lowest first). Near-duplicates are pairs of images whose features
have a cosine similarity at or above a threshold, reported with the split each image falls in (the folder's
own ``train/val/test``, else the split ``zoo finetune`` makes by default), so pairs that cross it show.

Only ``--out`` is written (and zoo's feature cache): no file of the data folder is moved, renamed or changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from finetune.config import DataConfig, TrainerConfig
from finetune.data.builtin import resolve_data
from finetune.data.cache_store import cache_key, cache_path
from finetune.data.features import backbone_digest, extract_features
from finetune.data.images import ImageDataset
from finetune.data.scan import Sample
from finetune.data.shards import refuse_shards
from finetune.data.split import split_folder
from finetune.data.transforms import eval_transform
from finetune.inspection.settings import CleanSettings
from finetune.results.image_grid import plot_image_grid
from finetune.runtime.folders import check_out_folder
from finetune.runtime.hardware import choose_loader
from finetune.runtime.progress import tracked
from zoo._io import DiskError, save_atomic, write_csv_atomic
from zoo.errors import ZooError
from zoo.factory import create_model
from zoo.registry import get_spec
from zoo.weights.loading import load_plain, weights_preprocessing

FORMAT_VERSION = 1  # of the cached features
BLOCK = 1024  # rows of the similarity matrix computed at a time


@dataclass(frozen=True)
class LabelIssue:
    path: Path
    given: str
    suggested: str
    quality: float  # the out-of-sample probability of the given label


@dataclass(frozen=True)
class Duplicate:
    path_a: Path
    path_b: Path
    similarity: float
    split_a: str
    split_b: str


@dataclass(frozen=True)
class CleanResult:
    out_dir: Path
    num_images: int
    folds: int
    out_of_fold_error: float  # percent of images whose label the linear head of the other folds does not predict
    issues: list[LabelIssue]
    duplicates: list[Duplicate]
    skipped: int  # unreadable files left out


def _check_out(out: Path, data: Path) -> None:
    check_out_folder(out)
    if out.resolve().is_relative_to(data.resolve()):
        raise ZooError(f"--out {out} lies inside the data folder {data}, which zoo clean never writes to: choose a "
                       "folder outside it")


def backbone_features(samples: Sequence[Sample], arch: str, image_size: int | None, batch_size: int) -> np.ndarray:
    """The head's input of ``arch`` (its default pretrained weights, eval mode) for every sample: N×D float32."""
    spec = get_spec(arch)
    if spec.weights is None:
        raise ZooError(f"zoo clean needs a pretrained backbone and {arch} has no pretrained weights: choose another "
                       "--arch, such as efficientnet_lite0")
    if len(spec.heads) > 1:
        raise ZooError(f"zoo clean reads the features that enter one classifier, and {arch} combines "
                       f"{len(spec.heads)} ({', '.join(spec.heads)}) that read different ones: choose another --arch, "
                       "such as efficientnet_lite0")
    preprocessing = weights_preprocessing(spec, "default")
    preprocessing = preprocessing.at(image_size or preprocessing.crop)
    size = preprocessing.crop
    problem = spec.input_size_problem(size)
    if problem:
        raise ZooError(problem)
    network = create_model(arch, num_classes=1, weights="default")
    transform = eval_transform(preprocessing)
    key = cache_key(samples, version=FORMAT_VERSION, arch=arch, backbone=backbone_digest(network, spec.head),
                    image_size=size, transform=repr(transform))
    path = cache_path("features", key, ".pt")
    if path.is_file():
        return load_plain(path, f"cannot read the cached features {path}", "delete it and run zoo clean again").numpy()
    gpu = torch.cuda.is_available()
    settings = choose_loader(None, len(samples), gpu=gpu)
    loader = DataLoader(ImageDataset(samples, transform), batch_size=batch_size, num_workers=settings.num_workers,
                        pin_memory=settings.pin_memory)
    network = network.to(memory_format=torch.channels_last)
    batches = tracked(loader, len(loader), "features", "extracting backbone features", None, "batches")
    # A 1×1-convolution head (BiT) takes N×D×1×1: the linear heads here take N×D.
    features = extract_features(network, spec.head, batches, torch.device("cuda" if gpu else "cpu"),
                                torch.channels_last, nullcontext).flatten(1)
    try:
        save_atomic(features, path)
    except DiskError:  # a cache that cannot be written only costs the next run this pass
        pass
    return features.numpy()


def out_of_sample_probabilities(features: np.ndarray, labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """N×classes probabilities, each image's from a linear head trained on the other folds (stratified)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    head = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return cross_val_predict(head, features, labels, cv=splitter, method="predict_proba")


def near_duplicates(features: np.ndarray, threshold: float) -> list[tuple[int, int, float]]:
    """Pairs ``(i, j, similarity)``, i < j, whose features' cosine similarity is at least ``threshold``, most similar
    first. The similarity matrix is computed in blocks of rows, so memory stays linear in the image count."""
    unit = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    pairs = []
    for start in range(0, len(unit), BLOCK):
        similarity = unit[start:start + BLOCK] @ unit.T
        rows, columns = np.nonzero(similarity >= threshold)
        for row, column in zip(rows.tolist(), columns.tolist(), strict=True):
            if start + row < column:
                pairs.append((start + row, column, float(similarity[row, column])))
    return sorted(pairs, key=lambda pair: -pair[2])


def clean(data: str | Path, out: Path, arch: str = CleanSettings.arch, folds: int = CleanSettings.folds,
          image_size: int | None = CleanSettings.image_size, batch_size: int = CleanSettings.batch_size,
          similarity: float = CleanSettings.similarity, shown: int = CleanSettings.shown) -> CleanResult:
    """Write ``label_issues.csv`` / ``.png`` and ``near_duplicates.csv`` for the image folder ``data`` to ``out``."""
    if folds < 2:
        raise ZooError(f"--folds must be at least 2 (each image is judged by heads trained on the others), got {folds}")
    if not 0 < similarity <= 1:
        raise ZooError(f"--similarity must be a cosine similarity above 0 and at most 1, got {similarity}")
    if batch_size < 1 or shown < 1:
        raise ZooError(f"--batch-size and --show must be at least 1, got {batch_size} and {shown}")
    defaults, seed = DataConfig(image_size=image_size), TrainerConfig().seed  # --image-size checked as finetune's
    refuse_shards(str(data), "clean")
    root, out = resolve_data(str(data)), Path(out)
    _check_out(out, root)
    split = split_folder(root, defaults.val_fraction, defaults.test_fraction, seed)
    parts = [(name, sample) for name in ("train", "val", "test") for sample in getattr(split, name)]
    samples = [sample for _, sample in parts]
    labels = np.array([sample.label for sample in samples])
    counts = np.bincount(labels, minlength=len(split.classes))
    if counts.min() < 2:
        raise ZooError(f"class {split.classes[int(counts.argmin())]} has {counts.min()} image: zoo clean judges each "
                       "image by heads trained on the others, so every class needs at least 2")
    folds = min(folds, int(counts.min()))
    features = backbone_features(samples, arch, image_size, batch_size)
    probabilities = out_of_sample_probabilities(features, labels, folds, seed)

    from cleanlab.filter import find_label_issues

    ranked = find_label_issues(labels, probabilities, return_indices_ranked_by="self_confidence", n_jobs=1)
    suggested = probabilities.argmax(axis=1)
    issues = [LabelIssue(samples[i].path, split.classes[labels[i]], split.classes[suggested[i]],
                         round(float(probabilities[i, labels[i]]), 6)) for i in ranked]
    duplicates = [Duplicate(samples[i].path, samples[j].path, round(value, 6), parts[i][0], parts[j][0])
                  for i, j, value in near_duplicates(features, similarity)]
    out.mkdir(parents=True, exist_ok=True)
    write_csv_atomic(out / "label_issues.csv", ("path", "given_label", "suggested_label", "label_quality"),
               [(issue.path, issue.given, issue.suggested, issue.quality) for issue in issues])
    write_csv_atomic(out / "near_duplicates.csv", ("path_a", "path_b", "similarity", "split_a", "split_b"),
               [(d.path_a, d.path_b, d.similarity, d.split_a, d.split_b) for d in duplicates])
    plot_image_grid([(issue.path, f"given: {issue.given}\nsuggested: {issue.suggested}\nquality {issue.quality:.3f}")
                     for issue in issues[:shown]], out / "label_issues.png",
                    f"{root.name}: the {min(shown, len(issues))} most suspicious of {len(issues)} label issues "
                    f"({arch}, {folds}-fold linear heads)")
    error = 100.0 * float((suggested != labels).mean())
    return CleanResult(out, len(samples), folds, round(error, 4), issues, duplicates, len(split.skipped))
