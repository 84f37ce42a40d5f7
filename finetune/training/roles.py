"""The processes of one run, each with one role, and how each finds the settings it trains with.

``zoo finetune``'s own process (``FIRST``) resolves every setting, makes the run folder and writes its config,
split and precision there. The other processes of a DDP run read them: those started by the first process's own
launcher (``LAUNCHED``) find the folder in their environment; those started like the first, with the same command
on another node, by SLURM or torchrun, wait for node 0 to write it (``PEER``) or, resumed, reopen the folder they
were given (``RESUMING_PEER``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path

from finetune.config import CONFIG_FILE, ConfigError, RunConfig, load_config, merge
from finetune.data.split import has_split
from finetune.runtime.console import is_launched_worker
from finetune.runtime.processes import LAUNCHER_PID_ENV, die_with_parent, launched_by_this_run, mark_launcher
from zoo._io import write_text_atomic

RUN_DIR_ENV = "ZOO_RUN_DIR"  # hands the run folder to the processes a DDP launch starts
PRECISION_FILE = "precision.txt"  # the precision the first process chose, for the other processes
NODE_WAIT_SECONDS = 600  # how long another node waits for node 0 to scan, split and write the run's settings


class Role(Enum):
    """What a process of a run does first."""

    FIRST = "first"
    LAUNCHED = "launched"
    PEER = "peer"
    RESUMING_PEER = "resuming peer"


def process_role(resume: Path | None) -> Role:
    """This process's role, from the marks a DDP launch leaves in the environment."""
    if not is_launched_worker():
        return Role.FIRST
    if RUN_DIR_ENV in os.environ and launched_by_this_run():
        return Role.LAUNCHED
    return Role.PEER if resume is None else Role.RESUMING_PEER


def starting_settings(role: Role, config: RunConfig, resume: Path | None) -> tuple[RunConfig, Path | None]:
    """The settings and run folder a process of ``role`` starts from."""
    return _STARTS[role](config, resume)


def _as_given(config: RunConfig, resume: Path | None) -> tuple[RunConfig, Path | None]:
    # The first process; or a peer resumed with the first's command, which resume_config merged the same way.
    return config, resume


def _launched(config: RunConfig, resume: Path | None) -> tuple[RunConfig, Path | None]:
    die_with_parent()
    run_dir = Path(os.environ[RUN_DIR_ENV])
    return load_config(run_dir / CONFIG_FILE), run_dir


def _peer(config: RunConfig, resume: Path | None) -> tuple[RunConfig, Path | None]:
    run_dir = _wait_for_run_folder(config)
    return load_config(run_dir / CONFIG_FILE), run_dir


_STARTS: dict[Role, Callable[[RunConfig, Path | None], tuple[RunConfig, Path | None]]] = {
    Role.FIRST: _as_given, Role.LAUNCHED: _launched, Role.PEER: _peer, Role.RESUMING_PEER: _as_given}


def hand_over(run_dir: Path, precision: str) -> None:
    """The first process's marks for the processes a DDP launch starts: where the run is, that this process
    launched them, and the precision every process trains in (written before the config other nodes wait for)."""
    os.environ[RUN_DIR_ENV] = str(run_dir)
    mark_launcher()
    write_text_atomic(run_dir / PRECISION_FILE, precision + "\n")


@contextmanager
def launch_marks() -> Iterator[None]:
    """The marks ``hand_over`` leaves in the environment, removed when the run ends: a later run in the same
    process, or a process it starts, must not take them for its own."""
    saved = {name: os.environ.get(name) for name in (RUN_DIR_ENV, LAUNCHER_PID_ENV)}
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def first_process_precision(config: RunConfig, run_dir: Path) -> RunConfig:
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
