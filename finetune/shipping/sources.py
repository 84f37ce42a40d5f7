"""What a command is pointed at (a run folder, a ``.ckpt`` or an exported bundle) as a model, loaded safely.

Checkpoints are read with ``torch.load(weights_only=True)``: a file that needs arbitrary code to unpickle
is refused with one line, and that code never runs. Bundles hold safetensors and JSON, never pickles.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from finetune.results.records import SUMMARY_FILE, RunSummary, Split
from zoo.bundle import (
    METADATA_FILE,
    BundleMetadata,
    LoadedModel,
    build_network,
    check_metadata,
    load,
)
from zoo.errors import ZooError
from zoo.weights.loading import load_plain

RUN_CHECKPOINT = "best.ckpt"
NETWORK_PREFIX = "network."  # the zoo network's attribute in finetune.training.module.Classifier


@dataclass(frozen=True)
class Source:
    """A model to evaluate, predict with or export, and where it came from."""

    path: Path
    model: LoadedModel
    run_dir: Path | None  # set when the source is a run folder: its saved split is the default data
    # The model's "validation" and "test" figures, each None when unknown, and what is known of its "data".
    measured: dict[str, Any]


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The content of a Lightning checkpoint written by ``zoo finetune``, holding plain tensors only."""
    content = load_plain(path, f"cannot load {path}: it is not a plain-tensor checkpoint",
                         "zoo loads checkpoints with weights_only=True and never runs code stored in them: use a .ckpt "
                         "written by zoo finetune")
    if not (isinstance(content, dict) and "zoo" in content and isinstance(content.get("state_dict"), dict)):
        raise ZooError(f"{path} is not a zoo checkpoint (no zoo metadata): use a .ckpt written by zoo finetune")
    check_metadata(content["zoo"], f"the zoo metadata of {path}")
    return content


def load_checkpoint(path: Path) -> LoadedModel:
    """Rebuild the network of a ``zoo finetune`` checkpoint without Lightning."""
    content = read_checkpoint(path)
    state_dict = {
        key.removeprefix(NETWORK_PREFIX): tensor
        for key, tensor in content["state_dict"].items()
        if key.startswith(NETWORK_PREFIX)
    }
    metadata = check_metadata(content["zoo"], f"the zoo metadata of {path}")
    return LoadedModel(build_network(metadata, state_dict, str(path)), metadata)


def _measured(checkpoint: Path) -> dict[str, Any]:
    """The run's validation and test figures, which ``summary.json`` gives for its best checkpoint only."""
    unknown: dict[str, Any] = {"validation": None, "test": None}
    if not (checkpoint.parent / SUMMARY_FILE).is_file():  # is_file: a FIFO would be waited on forever
        return unknown
    try:
        summary = RunSummary.read(checkpoint.parent)
    except ZooError:  # a damaged summary.json only loses these figures: the model itself is in the checkpoint
        return unknown
    if Path(summary.best_checkpoint).name != checkpoint.name:
        return unknown

    def figures(split: Split) -> dict[str, Any] | None:
        measured = summary.figures(split)
        return None if measured is None else measured.to_dict()

    data = {"folder": Path(summary.config.data.path).name, "num_train": summary.num_train,
            "num_val": summary.num_val, "num_test": summary.num_test, "reported_on": summary.reported_on,
            "chance_top1_error": summary.chance_top1_error, "learned": summary.learned}
    return {"validation": figures("val"), "test": figures("test"), "data": data}


def _load(path: Path) -> Source:
    if path.is_dir() and (path / METADATA_FILE).is_file():
        model = load(path)
        bundle = model.metadata
        measured = ({"validation": bundle.validation, "test": bundle.test, "data": bundle.data}
                    if isinstance(bundle, BundleMetadata) else {})
        return Source(path, model, None, {"validation": None, "test": None, **measured})
    if path.is_dir() and (path / RUN_CHECKPOINT).is_file():
        checkpoint = path / RUN_CHECKPOINT
        return Source(path, load_checkpoint(checkpoint), path, _measured(checkpoint))
    if path.is_file():
        return Source(path, load_checkpoint(path), None, _measured(path))
    what = ("is a folder with neither best.ckpt nor zoo.json" if path.is_dir()
            else "is not a regular file" if path.exists() else "does not exist")
    raise ZooError(f"{path} {what}: pass a run folder of zoo finetune, a .ckpt file, or a bundle of zoo export")


def load_source(path: str | Path, device: str | None = None, tta: str | None = None) -> Source:
    """Load a run folder (its best.ckpt), a ``.ckpt`` file, or a bundle folder (``zoo.json``).

    ``device``: where the model runs; ``None`` picks the GPU when there is one. ``tta``: the test-time
    augmentation to use (``None``: the model's own, the one its run measured the test split with).
    """
    source = _load(Path(path))
    if tta is not None:
        source.model.use_tta(tta)
    source.model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return source
