"""``compare(plan, config, out)``: fine-tune several architectures alike, one ordinary run folder each.

A plan names the architectures, the seeds (each row runs once per seed) and the settings to vary (every
architecture runs under every combination). The comparison folder holds ``comparison.yaml`` (the plan
and the shared run settings), ``split/`` (the one split every run uses, test images included) and
``runs/<arch>[/<setting>][/seed-<seed>]/``. Running again on the same folder skips finished runs,
continues interrupted ones from their ``last.ckpt`` and retries failed ones.
"""

from __future__ import annotations

import dataclasses
import gc
import itertools
import shlex
import shutil
import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

import zoo
from finetune.compare.results import Row, failed_row, run_row, settings_that_differ
from finetune.config import ConfigError, RunConfig, merge, read_yaml, to_dict, unvaried_settings
from finetune.data.shards import is_shards
from finetune.data.split import CLASSES_FILE, Split, load_split, save_split
from finetune.runtime.folders import check_out_folder
from finetune.training.data_split import make_split
from finetune.training.run import train
from finetune.training.run_folder import resume_config
from finetune.training.saving import continue_with
from zoo._io import write_error, write_text_atomic
from zoo.errors import first_line

SETTINGS_FILE = "comparison.yaml"
SPLIT_DIR = "split"
RUNS_DIR = "runs"
ARCHS_KEY = "archs"
SEEDS_KEY = "seeds"
VARY_KEY = "vary"
NOT_VARIED = unvaried_settings()


@dataclass(frozen=True)
class Plan:
    """What a comparison runs: each architecture under each combination of ``vary``, once per seed."""

    archs: list[str]
    seeds: list[int] = field(default_factory=list)  # empty: the config's one seed
    vary: dict[str, list[Any]] = field(default_factory=dict)  # dotted config key -> values

    def settings(self) -> list[dict[str, Any]]:
        """Every combination of the varied values, in the order given (one empty setting without ``vary``)."""
        return [dict(zip(self.vary, values, strict=True)) for values in itertools.product(*self.vary.values())]


def setting_label(setting: dict[str, Any]) -> str:
    """``model.dropout=0.5, optim.lr=0.001``; empty for no setting."""
    return ", ".join(f"{key}={value}" for key, value in setting.items())


def _nested(key: str, value: Any) -> dict[str, Any]:
    section, _, name = key.rpartition(".")
    return {section: {name: value}} if section else {name: value}


def check_plan(plan: Plan, config: RunConfig) -> None:
    """Refuse what cannot run: no architectures, repeated seeds, settings that cannot vary or do not exist."""
    if not plan.archs:
        raise ConfigError(f"name the architectures to compare: --archs alexnet,resnet18 or '{ARCHS_KEY}:' in --config")
    if len(set(plan.seeds)) != len(plan.seeds):
        raise ConfigError(f"seeds repeat in {plan.seeds}: each seed runs once, e.g. --seeds 0,1,2")
    for key, values in plan.vary.items():
        if key in NOT_VARIED:
            raise ConfigError(f"--vary {key} is not possible: {NOT_VARIED[key]}")
        if len(values) < 2 or len({repr(value) for value in values}) != len(values):
            raise ConfigError(f"--vary {key} needs two or more different values, e.g. --vary {key}=A,B; got {values}")
        for value in values:
            merge(config, _nested(key, value))  # an unknown key or a wrong value fails now, not after hours


def parse_vary(items: Sequence[str]) -> dict[str, list[Any]]:
    """``["model.dropout=0,0.5"]`` -> ``{"model.dropout": [0, 0.5]}``; values are read as YAML scalars."""
    vary: dict[str, list[Any]] = {}
    for item in items:
        key, sign, values = item.partition("=")
        if not sign or not key.strip() or not values.strip():
            raise ConfigError(f"--vary takes KEY=V1,V2 (e.g. --vary model.dropout=0,0.5), got '{item}'")
        if key.strip() in vary:
            raise ConfigError(f"--vary {key.strip()} is given twice: list all its values once, KEY=V1,V2,V3")
        vary[key.strip()] = [_scalar(key.strip(), value.strip()) for value in values.split(",")]
    return vary


def _scalar(key: str, text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except (yaml.YAMLError, ValueError, RecursionError) as error:  # ValueError: an integer of thousands of digits
        raise ConfigError(f"--vary {key}: '{text[:40]}' is not a YAML value ({first_line(error)}): give plain values "
                          "separated by commas, KEY=V1,V2 (lists cannot be varied)") from error


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]``."""
    try:
        seeds = [int(seed) for seed in text.split(",") if seed.strip()]
    except ValueError:
        seeds = []
    if not seeds:
        raise ConfigError(f"--seeds takes whole numbers separated by commas, e.g. 0,1,2; got '{text}'")
    return seeds


def load_comparison(path: str | Path, base: RunConfig | None = None) -> tuple[Plan, RunConfig]:
    """Read a comparison file: top-level ``archs`` (and optional ``seeds``, ``vary``) plus the ``RunConfig``
    sections every run shares."""
    path = Path(path)
    values = read_yaml(path, kind="comparison")
    archs = values.pop(ARCHS_KEY, [])
    seeds = values.pop(SEEDS_KEY, [])
    vary = values.pop(VARY_KEY, {})
    if not isinstance(archs, list) or not all(isinstance(name, str) for name in archs):
        raise ConfigError(f"{path}: config key '{ARCHS_KEY}' must be a list of architecture names")
    if not isinstance(seeds, list) or not all(type(seed) is int for seed in seeds):
        raise ConfigError(f"{path}: config key '{SEEDS_KEY}' must be a list of whole numbers")
    if not isinstance(vary, dict) or not all(isinstance(v, list) for v in vary.values()):
        raise ConfigError(f"{path}: config key '{VARY_KEY}' must map setting names to lists of values")
    if isinstance(values.get("model"), dict) and "arch" in values["model"]:
        raise ConfigError(f"{path}: a comparison sets model.arch for each run: "
                          f"list the architectures under {ARCHS_KEY}")
    try:
        return Plan(archs, seeds, vary), merge(base or RunConfig(), values)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None


def _save_comparison(plan: Plan, config: RunConfig, path: Path) -> None:
    values = to_dict(config)
    del values["model"]["arch"], values["out"]  # set per run; the folder may move
    content = {ARCHS_KEY: plan.archs, SEEDS_KEY: plan.seeds, VARY_KEY: plan.vary, **values}
    write_text_atomic(path, yaml.safe_dump(content, sort_keys=False, allow_unicode=True))  # a full disk: one line


def _claim(out: Path, plan: Plan, config: RunConfig) -> None:
    """Start ``out`` or continue it, refusing to mix runs trained with other settings into it."""
    check_out_folder(out)
    settings = out / SETTINGS_FILE
    if settings.is_file():
        saved_plan, saved = load_comparison(settings)
        changed = settings_that_differ([to_dict(saved), to_dict(config)])
        changed += [key for key in (SEEDS_KEY, VARY_KEY) if getattr(saved_plan, key) != getattr(plan, key)]
        changed += ["trainer.seed"] if saved.trainer.seed != config.trainer.seed else []
        if changed:
            raise ConfigError(
                f"{out} holds a comparison with other settings ({', '.join(changed)} differ): continue it with "
                f"the settings in {settings}, or choose another --out"
            )
    elif out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} already holds other files: choose another --out for the comparison")
    check_out_folder(out)  # a file, or a read-only folder: one line before any run
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise write_error(settings, error) from error
    _save_comparison(plan, config, settings)


def _shared_split(folder: Path, config: RunConfig) -> Split:
    """The one split of the comparison, made on the first run and read back on the next (shards hold their own)."""
    if is_shards(config.data.path):
        return make_split(config)
    if (folder / CLASSES_FILE).is_file():
        return load_split(folder)
    split = make_split(config)
    save_split(split, folder)
    return split


EXPECTED_FAILURES = (zoo.ZooError, torch.cuda.OutOfMemoryError)  # told in one line, without a traceback


def _one_line(error: Exception) -> str:
    if isinstance(error, zoo.ZooError):
        return first_line(error)
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return f"out of memory: {first_line(error)}"
    return f"{type(error).__name__}: {first_line(error)}"


def _train_once(label: str, config: RunConfig, name: str, run_dir: Path, split: Split, step: str) -> None:
    """Train ``name`` into ``run_dir`` unless it finished there; continue it if it was interrupted."""
    if (run_dir / "summary.json").is_file():
        print(f"zoo compare: {step} {label}: skipped, already finished in {run_dir}", flush=True)
        return
    run_config = dataclasses.replace(config, model=dataclasses.replace(config.model, arch=name), out=str(run_dir))
    if (run_dir / "last.ckpt").is_file():
        print(f"zoo compare: {step} {label}: continuing the interrupted run in {run_dir}", flush=True)
        train(resume_config(run_dir, {}), resume=run_dir)  # its own resolved settings (a found lr included)
        return
    if run_dir.exists():  # a start that died before its first checkpoint: nothing worth keeping
        shutil.rmtree(run_dir)
    print(f"zoo compare: {step} {label}: training in {run_dir}", flush=True)
    train(run_config, split=split)


def _run_folder(out: Path, name: str, setting: dict[str, Any], seed: int | None) -> Path:
    folder = out / RUNS_DIR / name.replace("/", "_")
    if setting:
        folder /= setting_label(setting).replace(", ", ",").replace("/", "_")
    return folder / f"seed-{seed}" if seed is not None else folder


def compare(plan: Plan, config: RunConfig, out: Path) -> list[Row]:
    """Fine-tune each architecture of ``plan`` under each setting and seed, with ``config`` on one shared
    split; a failure is recorded, the rest go on.

    Returns one results row per run (see ``finetune.compare.report.RESULT_COLUMNS``); ``finetune.compare.report`` groups
    the seeds of a row.
    """
    plan = dataclasses.replace(plan, archs=list(dict.fromkeys(plan.archs)))
    check_plan(plan, config)
    for name in plan.archs:
        zoo.get_spec(name)  # a misspelt name fails now, not hours into the comparison
    _claim(out, plan, config)
    split = _shared_split(out / SPLIT_DIR, config)
    seeds: list[int | None] = [*plan.seeds] or [None]  # no seeds: the config's one seed
    jobs = [(name, setting, seed) for name in plan.archs for setting in plan.settings() for seed in seeds]
    rows = []
    for index, (name, setting, seed) in enumerate(jobs, start=1):
        run_dir = _run_folder(out, name, setting, seed)
        run_config = config
        for key, value in setting.items():
            run_config = merge(run_config, _nested(key, value))
        if seed is not None:
            run_config = dataclasses.replace(run_config, trainer=dataclasses.replace(run_config.trainer, seed=seed))
        label = " ".join(part for part in (name, f"[{setting_label(setting)}]" if setting else "",
                                          f"seed {seed}" if seed is not None else "") if part)
        step = f"[{index}/{len(jobs)}]"
        try:
            with continue_with(f"zoo compare --out {shlex.quote(str(out))}"):  # it continues every run, this one first
                _train_once(label, run_config, name, run_dir, split, step)
            # Speed depends on the network and its settings, not on the seed: timed once per row.
            rows.append(run_row(run_dir, setting=setting_label(setting), save_speed=True,
                                measure_speed=seed in (None, *plan.seeds[:1])))
        except Exception as error:  # noqa: BLE001 - any failure of one architecture must not stop the others
            if not isinstance(error, EXPECTED_FAILURES):
                # Not a user error: the traceback is what makes a bug fixable after a long comparison.
                traceback.print_exception(error, file=sys.stderr)
            reason = _one_line(error)
            print(f"zoo compare: {step} {label} failed: {reason}", file=sys.stderr, flush=True)
            rows.append(failed_row(name, reason, run_config.model.weights, setting_label(setting), seed))
            # A failed run's tensors (an out-of-memory one's above all) would squeeze the next architecture.
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    return rows
