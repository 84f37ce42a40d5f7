"""``compare(archs, config, out)``: fine-tune several architectures alike, one ordinary run folder each.

The comparison folder holds ``comparison.yaml`` (the architectures and the shared run settings), ``split/``
(the one split every run uses) and ``runs/<arch>/``. Running again on the same folder skips finished
runs, continues interrupted ones from their ``last.ckpt`` and retries failed ones.
"""

from __future__ import annotations

import dataclasses
import gc
import shutil
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

import torch
import yaml

import zoo
from finetune.config import ConfigError, RunConfig, merge, read_yaml, to_dict
from finetune.data.split import CLASSES_FILE, Split, load_split, save_split
from finetune.report import Row, failed_row, run_row, settings_that_differ
from finetune.run import make_split, train

SETTINGS_FILE = "comparison.yaml"
SPLIT_DIR = "split"
RUNS_DIR = "runs"
ARCHS_KEY = "archs"


def load_comparison(path: str | Path, base: RunConfig | None = None) -> tuple[list[str], RunConfig]:
    """Read a comparison file: a top-level ``archs`` list plus the ``RunConfig`` sections every run shares."""
    path = Path(path)
    values = read_yaml(path, kind="comparison")
    archs = values.pop(ARCHS_KEY, [])
    if not isinstance(archs, list) or not all(isinstance(name, str) for name in archs):
        raise ConfigError(f"{path}: config key '{ARCHS_KEY}' must be a list of architecture names")
    if isinstance(values.get("model"), dict) and "arch" in values["model"]:
        raise ConfigError(f"{path}: a comparison sets model.arch for each run: list the architectures under {ARCHS_KEY}")
    try:
        return archs, merge(base or RunConfig(), values)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None


def _save_comparison(archs: Sequence[str], config: RunConfig, path: Path) -> None:
    values = to_dict(config)
    del values["model"]["arch"], values["out"]  # set per run; the folder may move
    path.write_text(yaml.safe_dump({ARCHS_KEY: list(archs), **values}, sort_keys=False, allow_unicode=True),
                    encoding="utf-8")


def _claim(out: Path, archs: Sequence[str], config: RunConfig) -> None:
    """Start ``out`` or continue it, refusing to mix runs trained with other settings into it."""
    settings = out / SETTINGS_FILE
    if settings.is_file():
        _, saved = load_comparison(settings)
        changed = settings_that_differ([to_dict(saved), to_dict(config)])
        if changed:
            raise ConfigError(
                f"{out} holds a comparison with other settings ({', '.join(changed)} differ): continue it with "
                f"the settings in {settings}, or choose another --out"
            )
    elif out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} already holds other files: choose another --out for the comparison")
    out.mkdir(parents=True, exist_ok=True)
    _save_comparison(archs, config, settings)


def _shared_split(folder: Path, config: RunConfig) -> Split:
    """The one split of the comparison, made on the first run and read back on the next."""
    if (folder / CLASSES_FILE).is_file():
        return load_split(folder)
    split = make_split(config)
    save_split(split, folder)
    return split


EXPECTED_FAILURES = (zoo.ZooError, torch.cuda.OutOfMemoryError)  # told in one line, without a traceback


def _one_line(error: Exception) -> str:
    if isinstance(error, zoo.ZooError):
        text = str(error)
    elif isinstance(error, torch.cuda.OutOfMemoryError):
        text = f"out of memory: {error}"
    else:
        text = f"{type(error).__name__}: {error}"
    return next((line.strip() for line in text.splitlines() if line.strip()), type(error).__name__)


def _train_once(name: str, config: RunConfig, run_dir: Path, split: Split, step: str) -> None:
    """Train ``name`` into ``run_dir`` unless it finished there; continue it if it was interrupted."""
    if (run_dir / "summary.json").is_file():
        print(f"zoo compare: {step} {name}: skipped, already finished in {run_dir}", flush=True)
        return
    run_config = dataclasses.replace(config, model=dataclasses.replace(config.model, arch=name), out=str(run_dir))
    if (run_dir / "last.ckpt").is_file():
        print(f"zoo compare: {step} {name}: continuing the interrupted run in {run_dir}", flush=True)
        train(run_config, resume=run_dir)
        return
    if run_dir.exists():  # a start that died before its first checkpoint: nothing worth keeping
        shutil.rmtree(run_dir)
    print(f"zoo compare: {step} {name}: training in {run_dir}", flush=True)
    train(run_config, split=split)


def compare(archs: Sequence[str], config: RunConfig, out: Path) -> list[Row]:
    """Fine-tune each of ``archs`` with ``config`` on one shared split; a failure is recorded, the rest go on.

    Returns one results row per architecture (see ``finetune.report.RESULT_COLUMNS``).
    """
    names = list(dict.fromkeys(archs))
    if not names:
        raise ConfigError(f"name the architectures to compare: --archs alexnet,resnet18 or '{ARCHS_KEY}:' in --config")
    for name in names:
        zoo.get_spec(name)  # a misspelt name fails now, not hours into the comparison
    _claim(out, names, config)
    split = _shared_split(out / SPLIT_DIR, config)
    rows = []
    for index, name in enumerate(names, start=1):
        run_dir = out / RUNS_DIR / name.replace("/", "_")
        step = f"[{index}/{len(names)}]"
        try:
            _train_once(name, config, run_dir, split, step)
            rows.append(run_row(run_dir, save_speed=True))
        except Exception as error:  # noqa: BLE001 - any failure of one architecture must not stop the others
            if not isinstance(error, EXPECTED_FAILURES):
                # Not a user error: the traceback is what makes a bug fixable after a long comparison.
                traceback.print_exception(error, file=sys.stderr)
            reason = _one_line(error)
            print(f"zoo compare: {step} {name} failed: {reason}", file=sys.stderr, flush=True)
            rows.append(failed_row(name, reason, config.model.weights))
            # A failed run's tensors (an out-of-memory one's above all) would squeeze the next architecture.
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    return rows
