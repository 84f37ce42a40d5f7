"""``train(config)``: from a folder of images to a trained, measured classifier in a run folder."""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.exceptions import SIGTERMException

import zoo
from finetune.config import (
    CONFIG_FILE,
    ConfigError,
    DataConfig,
    RunConfig,
    load_config,
    merge,
    resumable_settings,
    save_config,
)
from finetune.data.builtin import resolve_data
from finetune.data.images import UnreadableImageError
from finetune.data.shards import ShardSplit, is_shards, load_shards
from finetune.data.split import (
    Split,
    class_counts,
    classes_without,
    has_split,
    imbalance_ratio,
    load_split,
    save_split,
    split_folder,
)
from finetune.results.heldout import measure_best
from finetune.results.plots import plot_learning_curves
from finetune.results.records import RunSummary
from finetune.runtime.console import is_launched_worker, lightning_quieted, say
from finetune.runtime.folders import check_out_folder
from finetune.runtime.hardware import threads_restored
from finetune.runtime.processes import (
    LAUNCHER_PID_ENV,
    check_devices,
    devices_setting,
    die_with_parent,
    launched_by_this_run,
    mark_launcher,
)
from finetune.runtime.progress import PhaseTimes
from finetune.shipping.sources import read_checkpoint
from finetune.training.averaging import WeightEma
from finetune.training.callbacks import (
    EarlyStop,
    EpochLog,
    EpochMetrics,
    FiniteLoss,
    ProgressBar,
    StepLines,
    Throughput,
)
from finetune.training.freezing import BackboneFreeze
from finetune.training.loggers import make_logger
from finetune.training.lr_finder import LrFinding
from finetune.training.plateau import PlateauStop
from finetune.training.run_lock import lock_run_folder, release_run_folders
from finetune.training.saving import LAST_CHECKPOINT, AtomicCheckpointIO, BestCheckpoint, LastCheckpoint, resume_command
from finetune.training.setup import (
    Setup,
    choose_settings,
    learning_rate_finding,
    prepare,
    trainer_settings,
)
from zoo._io import DiskError, remove_temporaries, write_text_atomic
from zoo.errors import ZooError, describe_error

IMBALANCE_WARNING_RATIO = 3.0
RUN_DIR_ENV = "ZOO_RUN_DIR"  # hands the run folder to the processes a DDP launch starts
PRECISION_FILE = "precision.txt"  # the precision the first process chose, for the other processes
NODE_WAIT_SECONDS = 600  # how long another node waits for node 0 to scan, split and write the run's settings


@dataclass(frozen=True)
class RunResult:
    """Where the run lives and what it measured (``summary.json``; None in the other processes of a DDP run)."""

    run_dir: Path
    summary: RunSummary | None


def new_run_dir(config: RunConfig) -> Path:
    """The run folder for a new run; refuses one that already holds files (nothing is overwritten)."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = Path(config.out) if config.out else Path("runs") / f"{config.model.arch.replace('/', '_')}-{stamp}"
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--out {run_dir} is a file, not a folder: choose another --out")
    if run_dir.exists() and any(run_dir.iterdir()):
        raise ConfigError(
            f"run folder {run_dir} already holds a run: choose another --out, or continue it with --resume {run_dir}"
        )
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"cannot create the run folder {run_dir}: {error.strerror or error}; choose another --out"
                          ) from error
    lock_run_folder(run_dir)  # two runs started at once with the same --out: the second stops here
    return run_dir


RESUMABLE = {tuple(key.split(".")) for key in resumable_settings()}  # (section, name), as _fields gives them


def resume_config(run_dir: Path, overrides: dict[str, Any]) -> RunConfig:
    """The saved configuration of ``run_dir`` with ``overrides`` (e.g. more epochs) applied.

    Only settings in ``RESUMABLE`` may differ from the saved ones; a broken ``last.ckpt`` is refused in
    one line before Lightning opens it.
    """
    if not (run_dir / CONFIG_FILE).is_file():
        raise ConfigError(f"cannot resume {run_dir}: it is not a run folder of zoo finetune (no {CONFIG_FILE}); "
                          "start a new run with zoo finetune --out")
    saved = load_config(run_dir / CONFIG_FILE)
    config = merge(saved, {**{key: value for key, value in overrides.items() if key != "out"}, "out": str(run_dir)})
    if overrides.get("out") is not None and Path(overrides["out"]).resolve() != run_dir.resolve():
        raise ConfigError(f"--resume continues {run_dir} in place: leave out --out, or start a new run with --out")
    changed = [f"{section}.{name}" for section, name in _fields(config)
               if (section, name) not in RESUMABLE and _value(config, section, name) != _value(saved, section, name)]
    if changed:
        them = "it" if len(changed) == 1 else "them"
        raise ConfigError(f"--resume continues {run_dir} with its saved settings, and {', '.join(changed)} would "
                          f"change what it is: leave {them} out, or start a new run with --out")
    lock_run_folder(run_dir)  # before anything is removed or rewritten: another process may be training it
    # Node 0's own: on another node these could be the files node 0 is writing now.
    removed = [] if is_launched_worker() else remove_temporaries(run_dir)
    if removed:
        say(f"removed {len(removed)} half-written files a killed run left in {run_dir}")
    if (run_dir / LAST_CHECKPOINT).is_file():
        try:
            content = read_checkpoint(run_dir / LAST_CHECKPOINT)
        except ZooError as error:
            raise ConfigError(f"cannot resume {run_dir}: {error}; or delete {LAST_CHECKPOINT} to start the run again "
                              "from epoch 1 with --resume") from error
        started = int(content.get("epoch", 0)) + 1  # the epoch the checkpoint was saved in (Lightning counts from 0)
        if config.trainer.epochs is not None and config.trainer.epochs < started:
            raise ConfigError(f"{run_dir} has already trained {started} epochs, more than --epochs "
                              f"{config.trainer.epochs}: leave --epochs out, or give more to train on (e.g. --epochs "
                              f"{started + 1})")
        arch, classes = content["zoo"]["arch"], content["zoo"]["classes"]
        saved_classes = load_split(run_dir).classes if has_split(run_dir) else classes
        if arch != zoo.get_spec(config.model.arch).name:
            foreign = f"holds a {arch} network, not this run's {config.model.arch}"
        elif classes != saved_classes:
            foreign = f"was trained on other classes ({_listed(classes)}) than this run's ({_listed(saved_classes)})"
        else:
            return config
        raise ConfigError(f"{run_dir / LAST_CHECKPOINT} {foreign}: put back the run's own last.ckpt, or delete it "
                          "to start the run again from epoch 1 with --resume")
    return config


def _listed(names: Sequence[str], shown: int = 5) -> str:
    return ", ".join(names[:shown]) + (", …" if len(names) > shown else "")


def _fields(config: RunConfig) -> list[tuple[str, str]]:
    return [(section, item.name) for section in ("data", "model", "optim", "trainer")
            for item in dataclasses.fields(getattr(config, section))]


def _value(config: RunConfig, section: str, name: str) -> Any:
    value = getattr(getattr(config, section), name)
    return str(Path(value).resolve()) if (section, name) == ("data", "path") and Path(value).exists() else value


def _refuse_other_fractions(config: RunConfig, shards: ShardSplit) -> None:
    """Shards hold the split they were written with: other fractions would be silently ignored."""
    written = shards.fractions or asdict(DataConfig())  # shards of before the manifest recorded them: the defaults
    asked = [f"--{name.replace('_', '-')} {getattr(config.data, name)}" for name in ("val_fraction", "test_fraction")
             if getattr(config.data, name) != written[name]]
    if asked:
        raise ConfigError(f"{' and '.join(asked)} cannot change the split of the shards {config.data.path}, made when "
                          "they were written: drop it, or write new shards with zoo data optimize IMAGES --out NEW "
                          f"{' '.join(asked)}")


def make_split(config: RunConfig) -> Split:
    """Scan and split ``config.data.path`` (nothing is written yet) and report what was found."""
    split: Split
    if is_shards(config.data.path):  # split when written (zoo data optimize)
        split = load_shards(config.data.path)
        _refuse_other_fractions(config, split)
    else:
        split = split_folder(resolve_data(config.data.path), val_fraction=config.data.val_fraction,
                             test_fraction=config.data.test_fraction, seed=config.trainer.seed)
    counts = class_counts(split.train, split.classes)
    say(f"{len(split.classes)} classes, {len(split.train)} train / {len(split.val)} val / {len(split.test)} test "
         "images: " + ", ".join(f"{name} {count}" for name, count in counts.items()))
    if not split.val:
        raise ConfigError(f"no validation images in {config.data.path}: every class has a single image, and a run "
                          "needs images it does not train on to choose its checkpoint; add images (3 or more per "
                          "class) or a val/ folder")
    for part, use in (("val", "choosing the checkpoint"), ("test", "the test error")):
        images = getattr(split, part)
        missing = classes_without(images, split.classes)
        if images and missing:
            say(f"{len(missing)} of {len(split.classes)} classes have no {part} images ({_listed(missing)}): they "
                f"take no part in {use}; give each class 3 or more images", warning=True)
    if not split.test:
        say("no test images (data.test_fraction 0 and no test/ folder): every error reported is on the validation "
             "images that chose the checkpoint, so it is optimistic", warning=True)
    ratio = imbalance_ratio(counts)
    if ratio >= IMBALANCE_WARNING_RATIO and not config.data.class_weights:
        say(f"classes are imbalanced (largest/smallest = {ratio:.1f}): consider --class-weights", warning=True)
    return split


@dataclass(frozen=True)
class LrFindResult:
    """``zoo lr-find``'s answer: the range test, and the rate zoo's recipe would train this run with."""

    finding: LrFinding
    recipe_lr: float | None  # None when the config gave a rate of its own, or "auto"


# Settings lr-find does not use: it trains no epochs, and the rate is what it measures.
LR_FIND_UNUSED = ("trainer.epochs", "optim.schedule", "optim.lr")


def find_learning_rate(config: RunConfig, folder: Path | None = None) -> LrFindResult:
    """``zoo lr-find``: the range test for ``config`` (plot and curve written to ``folder``)."""
    with lightning_quieted(), threads_restored():
        return _find_learning_rate(config, folder)


def _find_learning_rate(config: RunConfig, folder: Path | None) -> LrFindResult:
    if folder is not None:  # before the work: a bad --out costs none
        check_out_folder(folder)
        if (folder / CONFIG_FILE).is_file():
            raise ConfigError(f"--out {folder} holds a run of zoo finetune, whose lr_find.png and lr_find.json this "
                              "would replace: choose another --out")
    split = make_split(config)
    chosen = choose_settings(config, split, unused=LR_FIND_UNUSED)
    setup = prepare(chosen, split)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    recipe_lr = chosen.optim.lr if config.optim.lr is None and isinstance(chosen.optim.lr, float) else None
    return LrFindResult(learning_rate_finding(config, setup, folder), recipe_lr)


def _resolve_lr(config: RunConfig, setup: Setup, run_dir: Path) -> RunConfig:
    """``--lr auto``: the finder's suggestion, in the config and the module."""
    lr = learning_rate_finding(config, setup, run_dir).suggestion
    say(f"learning rate: {lr:.2e} (range test on the training split: {run_dir / 'lr_find.png'})")
    config = merge(config, {"optim": {"lr": lr}})
    setup.module.optim = config.optim
    setup.module.hparams["optim"] = dataclasses.asdict(config.optim)
    return config


@dataclass
class _Prepared:
    """A run ready to train: its resolved settings, split, network and data, and its folder with its files."""

    config: RunConfig
    split: Split
    setup: Setup
    run_dir: Path
    checkpoint: Path | None  # last.ckpt to continue from; None for a fresh start
    times: PhaseTimes
    restarted: bool = False  # more epochs on an ended run: a new schedule, and early stopping judged afresh


@dataclass
class _Watchers:
    """The callbacks whose state the summary reads."""

    metrics: EpochMetrics
    throughput: Throughput
    best: BestCheckpoint
    early_stop: EarlyStop | None


def train(config: RunConfig, *, resume: Path | None = None, split: Split | None = None,
          watchers: Sequence[pl.Callback] = (), started: float | None = None) -> RunResult:
    """Fine-tune ``config.model.arch`` on ``config.data.path``; everything lands in the run folder.

    ``split`` reuses a split made elsewhere (``zoo compare`` shares one); by default one is made from
    the data folder, or read back from the run folder when resuming. The data and the weights are
    checked before the run folder is created, so a failed start leaves nothing behind. ``watchers`` are
    extra callbacks that observe the run (the benchmarks time its steps with one).

    ``started`` is the ``time.perf_counter()`` reading at which the user's wait began (``zoo finetune`` passes its
    process's start, so the imports count as the ``startup`` phase); by default, the call. ``wall_seconds`` counts
    from there, and ``phase_seconds`` splits it into phases that do not overlap.
    """
    entered = time.perf_counter()
    times = PhaseTimes()
    if started is not None and started < entered:
        times.add("startup", entered - started)
    with lightning_quieted(), _launch_marks(), threads_restored(), _releasing_run_folders():
        with times.phase("setup"):  # less its scan, precision probe, decoding and lr finding, timed on their own
            run = _prepare(config, resume, split, times)
            trainer, watched = _build_trainer(run, watchers)
        with times.phase("train"):  # the epochs with their validation, less any decoding or feature extraction
            _fit(trainer, run)
            _validate_final_step(trainer, run.setup, watched)
        if not trainer.is_global_zero:
            return RunResult(run.run_dir, None)
        summary = _summarize(trainer, run, watched, entered if started is None else started)
    if not summary.learned:
        say(not_learned_message(summary), warning=True)
    return RunResult(run.run_dir, summary)


@contextmanager
def _releasing_run_folders() -> Iterator[None]:
    try:
        yield
    finally:
        release_run_folders()


@contextmanager
def _launch_marks() -> Iterator[None]:
    """The run folder and launcher marks ``_prepare`` leaves in the environment for a DDP launch, removed when
    the run ends: a later run in the same process, or a process it starts, must not take them for its own."""
    saved = {name: os.environ.get(name) for name in (RUN_DIR_ENV, LAUNCHER_PID_ENV)}
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _prepare(config: RunConfig, resume: Path | None, split: Split | None, times: PhaseTimes) -> _Prepared:
    """Split, resolve the settings, build the network and data, then make or reopen the run folder and write
    its config and split (the processes of a DDP launch read them instead)."""
    worker = is_launched_worker()
    if worker:  # the first process (node 0's) resolved every choice and wrote it down
        if RUN_DIR_ENV in os.environ and launched_by_this_run():  # started by that process's own DDP launcher
            die_with_parent()
            resume = Path(os.environ[RUN_DIR_ENV])
            config = load_config(resume / CONFIG_FILE)
        elif resume is None:  # started like the first, with the same command: on another node, SLURM, torchrun
            resume = _wait_for_run_folder(config)
            config = load_config(resume / CONFIG_FILE)
        # else: resumed with the same command as the first process; resume_config merged the same settings here
    restart = resume is not None and not (resume / LAST_CHECKPOINT).is_file()
    if restart and not worker:
        say(f"{resume} has no checkpoint yet (it stopped before its first epoch ended): starting it again from "
            "epoch 1 with its saved settings")
    if resume is not None and has_split(resume) and not is_shards(config.data.path):
        split = load_split(resume)
    elif split is None:
        with times.phase("scan"):
            split = make_split(config)
    config = choose_settings(config, split)
    check_devices(config)
    if worker and resume is not None:
        config = _first_process_precision(config, resume)
    setup = prepare(config, split, times)
    run_dir = resume if resume is not None else new_run_dir(config)
    lock_run_folder(run_dir)  # a resume through the API, without resume_config
    if not worker:
        os.environ[RUN_DIR_ENV] = str(run_dir)  # what the processes of a DDP launch need to find this run
        mark_launcher()
        # Before the config that other nodes wait for: every process trains in this process's precision.
        write_text_atomic(run_dir / PRECISION_FILE, setup.precision.value + "\n")
        # First, so a run killed from here on can be resumed; on resume, the new epochs or devices, for the
        # processes of a DDP launch and the next resume.
        save_config(config, run_dir / CONFIG_FILE)
        if not has_split(run_dir):
            save_split(split, run_dir)
            if split.skipped:
                say(f"skipped {len(split.skipped)} unreadable files (listed with reasons in "
                    f"{run_dir / 'skipped.csv'})", warning=True)
    if config.optim.lr == "auto":
        with times.phase("lr_find"):
            config = _resolve_lr(config, setup, run_dir)
        if not worker:
            save_config(config, run_dir / CONFIG_FILE)  # the resolved learning rate, not "auto"
    checkpoint = None if resume is None or restart else resume / LAST_CHECKPOINT
    restarted = checkpoint is not None and _restart_schedule(checkpoint, config, setup, worker)
    return _Prepared(config, split, setup, run_dir, checkpoint, times, restarted)


def _restart_schedule(checkpoint: Path, config: RunConfig, setup: Setup, worker: bool) -> bool:
    """On a resume, the learning-rate schedule the run continues with; True when it is a warm restart.

    A run that had finished its epochs, or stopped early, ended its schedule near a learning rate of 0: more
    epochs on it would barely train. They get their own warm-up and cosine decay instead, from the last step.
    """
    content = read_checkpoint(checkpoint)
    schedule = content.get("schedule") or {}
    setup.module.restart_step = int(schedule.get("start") or 0)
    done, step = int(content.get("epoch", 0)) + 1, int(content.get("global_step", 0))
    stopped = any(int(state.get("stopped_epoch", 0) or 0) > 0 for name, state in content.get("callbacks", {}).items()
                  if name.startswith("EarlyStop") and isinstance(state, dict))
    ended = stopped or (schedule.get("total") is not None and step >= int(schedule["total"]))
    if not ended or config.trainer.epochs is None or config.trainer.epochs <= done:
        return False
    setup.module.restart_step = step
    if not worker:
        how = f"stopped early after epoch {done}" if stopped else f"finished its {done} epochs"
        say(f"warm restart: the run {how}, its learning rate decayed to the end; epochs {done + 1}-"
            f"{config.trainer.epochs} get a new warm-up and cosine decay from lr {config.optim.lr}")
    return True


def _first_process_precision(config: RunConfig, run_dir: Path) -> RunConfig:
    """``config`` with the precision the first process chose for ``auto``.

    ``auto`` times bf16 on CPUs without AMX, and each process would time it anew: one could choose bf16 and another
    fp32, training one model in two precisions. config.yaml keeps ``auto``, so a resume on other hardware chooses
    again.
    """
    path = run_dir / PRECISION_FILE
    if config.trainer.precision != "auto" or not path.is_file():
        return config
    return merge(config, {"trainer": {"precision": path.read_text(encoding="utf-8").strip()}})


def _wait_for_run_folder(config: RunConfig) -> Path:
    """In a process not started by the first one (another node, SLURM, torchrun): the run folder, once the first
    process has written its settings and split there."""
    if config.out is None:
        raise ConfigError("a run whose processes are started by SLURM, torchrun or on several nodes needs --out: a "
                          "folder on a filesystem every process sees, given to the same command everywhere")
    run_dir = Path(config.out)
    deadline = time.monotonic() + NODE_WAIT_SECONDS
    while time.monotonic() < deadline:
        if has_split(run_dir) and (run_dir / CONFIG_FILE).is_file():
            if load_config(run_dir / CONFIG_FILE).optim.lr != "auto":  # node 0 has found the learning rate
                return run_dir
        time.sleep(1.0)
    raise ConfigError(f"waited {NODE_WAIT_SECONDS} s for node 0 to write its settings into {run_dir}: start node 0 "
                      "with the same command, and give every node the same --out on a shared filesystem")


def _build_trainer(run: _Prepared, extra: Sequence[pl.Callback]) -> tuple[pl.Trainer, _Watchers]:
    config, run_dir = run.config, run.run_dir
    metrics = EpochMetrics(run_dir / "metrics.csv")
    throughput = Throughput()
    best = BestCheckpoint(run_dir, config.trainer.monitor)
    # A terminal gets the live bar; a log file one line per epoch instead of every redraw, and a progress line
    # at most every few seconds within a long epoch.
    progress = [ProgressBar()] if sys.stdout.isatty() else [EpochLog(metrics, throughput), StepLines("training")]
    # BestCheckpoint before LastCheckpoint: last.ckpt must hold the best score of its own epoch.
    last = LastCheckpoint(run_dir, config.trainer.checkpoint_interval)
    callbacks: list[pl.Callback] = [best, metrics, throughput, last, FiniteLoss(), *progress, *extra]
    unfreeze_epoch = config.optim.unfreeze_epoch if config.optim.freeze == "until-epoch" else 0
    if config.optim.freeze != "none":
        callbacks.append(BackboneFreeze(unfreeze_epoch or None))
    if config.optim.schedule == "plateau" and not run.restarted:  # a warm restart runs its own epochs out
        callbacks.append(PlateauStop())
    if isinstance(config.optim.ema, float):
        callbacks.append(WeightEma(config.optim.ema))
    early_stop = (EarlyStop(config.trainer.patience, unfreeze_epoch, fresh=run.restarted) if config.trainer.patience
                  else None)
    if early_stop is not None:
        callbacks.append(early_stop)
    trainer = pl.Trainer(
        **{**trainer_settings(config, run.setup.precision.value, run_dir),
           "logger": make_logger(config.trainer.logger, run_dir)},
        max_epochs=config.trainer.epochs,
        max_steps=config.trainer.max_steps,
        devices=devices_setting(config.trainer.devices),
        num_nodes=config.trainer.num_nodes,
        strategy=config.trainer.strategy,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        num_sanity_val_steps=0,
        log_every_n_steps=10,
    )
    return trainer, _Watchers(metrics, throughput, best, early_stop)


def _fit(trainer: pl.Trainer, run: _Prepared) -> None:
    """``trainer.fit``, with what stops it said in one line (and the exit status a shell gives the signal)."""
    try:
        # weights_only pinned explicitly: TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD in the environment cannot unpin it.
        trainer.fit(run.setup.module, datamodule=run.setup.data, ckpt_path=run.checkpoint, weights_only=True)
    # LastCheckpoint saved last.ckpt and printed the resume command; the statuses are a shell's for the signal
    # (Lightning's own: 0 after SIGTERM, which would look like success, and 1 after Ctrl-C).
    except SIGTERMException:
        raise SystemExit(128 + signal.SIGTERM) from None
    except SystemExit:
        if trainer.interrupted:
            raise SystemExit(128 + signal.SIGINT) from None
        raise
    except RuntimeError as error:  # a last.ckpt of the same architecture and classes whose tensors do not fit
        if run.checkpoint is None or "state_dict" not in str(error):
            raise
        raise ConfigError(f"{run.checkpoint} does not fit this run's network ({describe_error(error)}): put back "
                          "the run's own last.ckpt, or delete it to start the run again from epoch 1 with --resume"
                          ) from error
    except (DiskError, UnreadableImageError) as error:
        raise type(error)(f"{error}; then continue with: {resume_command(run.run_dir)}") from error


def _summarize(trainer: pl.Trainer, run: _Prepared, watched: _Watchers, started: float) -> RunSummary:
    """Measure the best checkpoint once on the test split and write ``summary.json``; its content."""
    config, split, setup, run_dir = run.config, run.split, run.setup, run.run_dir
    final = final_metrics(watched.metrics.rows, config.trainer.monitor)
    if split.test:
        say(f"measuring the best checkpoint (epoch {final['best_epoch']}) once on {len(split.test)} test images")
    measured = measure_best(trainer, setup.module, setup.data, split, run_dir, final, config.trainer.tta,
                            run.times)
    with run.times.phase("report"):
        if watched.metrics.rows:
            plot_learning_curves(watched.metrics.rows, run_dir / "learning_curves.png",
                                 f"{setup.spec.name} on {Path(config.data.path).name}",
                                 None if final["best_epoch"] is None else int(final["best_epoch"]))
    early_stop = watched.early_stop
    summary = RunSummary(**{
        "arch": setup.spec.name,
        "weights": setup.weights_origin,
        "num_classes": len(split.classes),
        "classes": split.classes,
        "num_train": len(split.train),
        "num_val": len(split.val),
        "num_test": len(split.test),
        "num_skipped": len(split.skipped),
        "image_size": setup.image_size,
        "epochs": trainer.current_epoch,
        "stopped_early_after_epoch": early_stop.stopped_at if early_stop is not None else None,
        "steps": trainer.global_step,
        "precision": setup.precision.value,
        "memory_format": "channels_last" if setup.module.memory_format == torch.channels_last else "contiguous",
        "selected_on": "val",
        **final,
        **measured,
        "train_seconds": round(watched.throughput.seconds, 3),
        # Start-up, scan, setup, precision probe, decoding, features, lr finding, training, calibration, held-out
        # measurement, report: apart from the summary's own writing, they add up to the wall time.
        "phase_seconds": run.times.rounded(),
        "wall_seconds": round(time.perf_counter() - started, 3),
        "train_images_per_second": round(watched.throughput.images_per_second, 2),
        "best_checkpoint": str(run_dir / "best.ckpt"),
        "last_checkpoint": str(run_dir / "last.ckpt"),
        "seed": config.trainer.seed,
        "config": config,
    })
    summary.write(run_dir)
    return summary


def not_learned_message(summary: RunSummary) -> str:
    """One line saying a run stayed at chance, with its figures and what to try."""
    split = summary.reported_on
    interval, error = summary.interval(split), summary.error(split)
    assert interval is not None and error is not None  # a run is judged on a split it measured
    low, high = interval
    hints = ["a lower --lr", "more --epochs"]
    if summary.weights == "none":
        hints.append("pretrained --weights default where the architecture has them")
    return (f"{summary.arch} did not learn: its {split} top-1 error {error:.1f}% "
            f"(95% CI {low:.1f}-{high:.1f}) does not lie below chance, {summary.chance_top1_error:.1f}% "
            f"(always the most frequent class); try {', '.join(hints)}")


def _validate_final_step(trainer: pl.Trainer, setup: Setup, watched: _Watchers) -> None:
    """A run cut short by ``max_steps`` mid-epoch is still measured and checkpointed at its last step."""
    if watched.metrics.validated_step == trainer.global_step:  # the same answer on every process of a DDP run
        return
    trainer.validate(setup.module, datamodule=setup.data, verbose=False)
    metrics = trainer.callback_metrics
    monitored, loss = metrics.get(str(watched.best.monitor)), metrics.get("val/loss")
    run_dir = Path(str(watched.best.dirpath))
    if monitored is not None and watched.best.better(float(monitored), float(loss) if loss is not None else None):
        trainer.save_checkpoint(run_dir / "best.ckpt")
    trainer.save_checkpoint(run_dir / LAST_CHECKPOINT)


def best_row(rows: Sequence[dict[str, float | None]], monitor: str = "val_error") -> dict[str, float | None]:
    """The row of metrics.csv whose checkpoint is best.ckpt: the lowest validation top-1 error, of equal ones the
    lowest validation loss (``val_error``), or the lowest validation loss (``val_loss``); the first of exact ties,
    as ``BestCheckpoint`` keeps the first. Empty when no epoch was validated."""
    def key(row: dict[str, float | None]) -> tuple[float, ...]:
        error, loss = row.get("val/top1_error"), row.get("val/loss")
        finite_loss = loss if loss is not None and not math.isnan(loss) else math.inf
        return (finite_loss,) if monitor == "val_loss" else (error if error is not None else math.inf, finite_loss)

    validated = [row for row in rows if row.get("val/top1_error") is not None]
    return min(validated, key=key, default={})


def final_metrics(rows: Sequence[dict[str, float | None]], monitor: str = "val_error") -> dict[str, Any]:
    """The validation figures of the best checkpoint's epoch (one row of metrics.csv), what chose it, and the
    last epoch's."""
    best = best_row(rows, monitor)
    last = rows[-1] if rows else {}
    tied = [row for row in rows if best and row.get("val/top1_error") == best.get("val/top1_error")]
    tied_losses = [loss for row in tied if (loss := row.get("val/loss")) is not None]
    return {
        "best_epoch": int(best["epoch"] or 0) if best else None,
        "val_top1_error": best.get("val/top1_error"),
        "val_topk_error": best.get("val/topk_error"),
        "val_loss": best.get("val/loss"),
        "final_val_top1_error": last.get("val/top1_error"),
        "final_val_topk_error": last.get("val/topk_error"),
        # What chose best.ckpt and on what figures; epochs_tied: those of the same validation error.
        "selection": {"monitor": monitor, "tie_break": "val_loss" if monitor == "val_error" else None,
                      "epoch": int(best["epoch"] or 0) if best else None, "val_top1_error": best.get("val/top1_error"),
                      "val_loss": best.get("val/loss"), "epochs_tied": len(tied),
                      "lowest_val_loss_of_tied": min(tied_losses, default=None)},
    }
