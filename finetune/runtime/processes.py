"""The processes a run starts: no more than the machine can hold, and none that outlives its parent."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

import torch

from finetune.config import ConfigError, RunConfig
from finetune.runtime.console import is_launched_worker
from finetune.runtime.hardware import usable_cores

_PR_SET_PDEATHSIG = 1  # linux/prctl.h
LAUNCHER_PID_ENV = "ZOO_LAUNCHER_PID"
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
SPAWNING = ("spawn", "fork", "notebook")  # Lightning strategies whose processes cannot return the run
MAX_LOADERS_PER_CORE = 4  # data-loader processes per core beyond which more only add memory


def devices_setting(devices: str) -> int | str | list[int]:
    """``trainer.devices`` as Lightning takes it: ``auto``, a count, or a list of device indices."""
    if devices == "auto":
        return devices
    try:
        setting: int | list[int] = [int(d) for d in devices.split(",") if d] if "," in devices else int(devices)
    except ValueError:
        raise ConfigError(f"trainer.devices must be auto, a count or a list like 0,1; got '{devices}'") from None
    # -1 ("all" to Lightning) is refused too: zoo sizes the run's processes itself, from a count it can check.
    if setting in (0, []) or (isinstance(setting, int) and setting < 1) or (isinstance(setting, list)
                                                                       and min(setting) < 0):
        raise ConfigError(f"trainer.devices must be auto, a count of at least 1 or a list like 0,1; got '{devices}'")
    return setting


def processes_per_node(config: RunConfig) -> int:
    """How many training processes a run starts on each machine: they share its cores."""
    setting = devices_setting(config.trainer.devices)
    if isinstance(setting, list):
        return len(setting)
    if setting not in ("auto", -1):
        return int(setting)
    on_gpu = config.trainer.accelerator != "cpu" and torch.cuda.is_available()
    if setting == -1:
        return torch.cuda.device_count() if on_gpu else usable_cores()
    return 1  # auto: one CPU process (Lightning's), or one GPU, unless the strategy asks for more


def check_devices(config: RunConfig) -> None:
    """Refuse, in one line and before the run folder exists, what Lightning would reject with a traceback or
    accept and then hang on: an unknown accelerator or strategy, a GPU that is not there, more GPUs than
    there are, or more CPU processes than cores (each process trains a whole copy of the model)."""
    from pytorch_lightning.accelerators import AcceleratorRegistry
    from pytorch_lightning.strategies import StrategyRegistry

    trainer = config.trainer
    if trainer.num_nodes > 1 and config.out is None:
        raise ConfigError(f"--num-nodes {trainer.num_nodes} needs --out: a folder on a filesystem every node sees, "
                          "given to the same command on every node")
    accelerator = trainer.accelerator
    accelerators = ("auto", "gpu", *sorted(AcceleratorRegistry.available_accelerators()))
    if accelerator not in accelerators:
        raise ConfigError(f"unknown accelerator '{accelerator}': use one of {', '.join(accelerators)}")
    if trainer.strategy not in ("auto", *StrategyRegistry.available_strategies()):
        raise ConfigError(f"unknown strategy '{trainer.strategy}': use auto, ddp, fsdp or deepspeed "
                          "(Lightning's strategy names)")
    if any(word in trainer.strategy for word in SPAWNING):
        # Their processes start afresh and hand nothing back: the run's results, metrics and resume would be lost.
        raise ConfigError(f"strategy '{trainer.strategy}' starts processes zoo cannot take results back from: use "
                          "ddp (or auto), which runs the same training")
    workers = config.data.num_workers
    if workers is not None and workers > MAX_LOADERS_PER_CORE * usable_cores():
        raise ConfigError(f"--num-workers {workers} is far more than the {usable_cores()} cores of this machine (each "
                          f"worker is a process holding a copy of the dataset): use at most "
                          f"{MAX_LOADERS_PER_CORE * usable_cores()}, or leave it out to choose from the machine")
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if accelerator == "mps" or (accelerator == "auto" and gpus == 0 and torch.backends.mps.is_available()):
        gpus = 1 if torch.backends.mps.is_available() else 0  # Apple's GPU: one device
    if accelerator in ("gpu", "cuda", "mps") and gpus == 0:
        raise ConfigError(f"--accelerator {accelerator}, but PyTorch sees no GPU it can use for that on this "
                          "machine: use --accelerator cpu or auto")
    setting = devices_setting(trainer.devices)
    if setting in ("auto", -1):
        return
    requested = len(setting) if isinstance(setting, list) else int(setting)
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and gpus == 0)
    if on_cpu and requested > usable_cores():
        raise ConfigError(f"--devices {trainer.devices} asks for {requested} CPU training processes, but this machine "
                          f"has {usable_cores()} cores: use --devices {usable_cores()} or fewer (each process trains "
                          "a copy of the model)")
    if not on_cpu and requested > gpus:
        raise ConfigError(f"--devices {trainer.devices} asks for {requested} GPUs, but this machine has {gpus}: "
                          f"use --devices {gpus} or fewer")


def die_with_parent() -> None:
    """In a process Lightning's launcher started: be sent SIGTERM when the launching process dies, even by
    SIGKILL, instead of waiting forever for peers that are gone (Linux only; elsewhere nothing changes)."""
    if not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.environ.get(LAUNCHER_PID_ENV) not in (None, str(os.getppid())):  # it died before the request was made
        os.kill(os.getpid(), signal.SIGTERM)


def launched_by_this_run() -> bool:
    """Whether this process's parent is the run's first process (its DDP launcher), not merely a process whose
    environment still holds the marks of an earlier run (a notebook or test session that called train())."""
    return os.environ.get(LAUNCHER_PID_ENV) == str(os.getppid())


def orphaned() -> bool:
    """Whether this is a process of a DDP launch whose launching process (rank 0) has died."""
    return is_launched_worker() and LAUNCHER_PID_ENV in os.environ and not launched_by_this_run()


def mark_launcher() -> None:
    """Tell the processes this one is about to launch who their parent is (see ``die_with_parent``)."""
    os.environ[LAUNCHER_PID_ENV] = str(os.getpid())


def give_back_freed_memory() -> None:
    """Allocate buffers of 1 MB and more (decoded uploads) with mmap, so freeing one returns it to the system.

    glibc otherwise keeps them in per-thread heaps after a burst of huge uploads: the server stayed gigabytes
    larger for good. Linux with glibc only; elsewhere nothing changes.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, 1 << 20)
    except (OSError, AttributeError):  # another C library (musl)
        pass
