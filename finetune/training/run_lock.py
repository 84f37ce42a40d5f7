"""One zoo process per run folder: a new run or a resume holds a lock on its folder while it trains."""

from __future__ import annotations

import os
from pathlib import Path

from finetune.config import ConfigError
from finetune.runtime.console import is_launched_worker

LOCK_FILE = ".zoo-run.lock"  # stays in the folder; the lock on it ends with the process that holds it
_held: dict[Path, int] = {}  # resolved run folder -> the open lock file


def lock_run_folder(run_dir: Path) -> None:
    """Hold ``run_dir`` for this process until ``release_run_folders`` (or its exit, even by SIGKILL).

    A second ``zoo finetune`` on the same folder, a new run or a ``--resume``, is refused in one line instead of
    training beside this one and writing its epochs into the same metrics. The processes of a DDP launch share
    their first process's lock. Where the filesystem has no locks, nothing is held.
    """
    key = Path(run_dir).resolve()
    if key in _held or is_launched_worker():
        return
    try:
        import fcntl
    except ImportError:  # Windows
        return
    try:
        descriptor = os.open(key / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:  # a read-only folder: the run fails on its first write, with its own one line
        return
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        raise ConfigError(f"{run_dir} is in use by another zoo process training it (a run or a --resume): wait for "
                          "it to end, or stop it first") from None
    except OSError:  # no locks on this filesystem (some network filesystems)
        os.close(descriptor)
        return
    _held[key] = descriptor


def release_run_folders() -> None:
    """Let go of every run folder this process holds (a run ended; ``zoo compare`` trains the next)."""
    while _held:
        os.close(_held.popitem()[1])
