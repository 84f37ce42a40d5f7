"""What a run prints: zoo's own lines (from the first process only) and Lightning's warnings, thinned."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from zoo.text import one_line

# Where a process learns its place in a distributed run: Lightning's launcher and torchrun (RANK, LOCAL_RANK,
# GROUP_RANK), a node started by hand (NODE_RANK), SLURM (SLURM_PROCID).
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID")


def is_launched_worker() -> bool:
    """True in every process of a distributed run but the first (global rank 0), however it was started."""
    return any(os.environ.get(name, "0") != "0" for name in RANK_VARIABLES)


def say(message: str, *, warning: bool = False) -> None:
    """Print ``message`` as one line (from the first process only): a class or folder name in it may hold a line
    break or an escape sequence, and is written as its escape."""
    if not is_launched_worker():
        print(f"zoo: {'warning: ' if warning else ''}{one_line(message)}", file=sys.stderr if warning else sys.stdout,
              flush=True)


# Lightning's python loggers. At INFO they open and close every run with lines that tell the user nothing zoo
# does not say itself: devices and precision (zoo prints the precision it chose and why), tips, checkpoint
# restores, why fit stopped, the learning-rate finder saving and restoring the network around its test. Their
# warnings (WARNING and above) still show.
LIGHTNING_LOGGERS = ("pytorch_lightning", "lightning_fabric")


def _quiet_warnings() -> tuple[tuple[type[Warning], str], ...]:
    """Lightning's warnings that zoo's own layout triggers on purpose: (category, the module that warns)."""
    # Imported here: say() and is_launched_worker() serve commands that never load Lightning (or torch).
    from lightning_fabric.utilities.warnings import PossibleUserWarning

    return (
        # Checkpoints go into the run folder beside its other files; a max_steps stop mid-epoch has no monitored
        # key yet; BestCheckpoint keeps its best score when the run folder moved.
        (UserWarning, r"pytorch_lightning\.callbacks\.model_checkpoint"),
        (FutureWarning, r"pytorch_lightning\.utilities\._pytree"),  # Lightning's own use of torch's old LeafSpec
        (PossibleUserWarning, r"pytorch_lightning\.trainer\.connectors\.data_connector"),  # zoo sizes the workers
        # Frozen BatchNorm kept in eval mode on purpose; zoo's own log_every_n_steps against a short epoch.
        (PossibleUserWarning, r"pytorch_lightning\.loops\.fit_loop"),
    )


@contextmanager
def lightning_quieted() -> Iterator[None]:
    """Within the block, drop Lightning's INFO lines and the warnings zoo's own layout triggers on purpose.

    The levels and filters are restored afterwards, so a caller's own warnings and logging are as they were.
    """
    loggers = [logging.getLogger(name) for name in LIGHTNING_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
    try:
        with warnings.catch_warnings():
            for category, module in _quiet_warnings():
                warnings.filterwarnings("ignore", category=category, module=module)
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
