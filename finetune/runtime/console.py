"""What a run prints: zoo's own lines (from the first process only) and Lightning's, thinned."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from zoo.errors import one_line

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


# Lightning's start-up and shutdown lines, which open and close every log without telling the user anything
# zoo does not print itself (zoo prints the precision it chose and why).
LIGHTNING_CHATTER = ("💡", "GPU available:", "TPU available:", "Automatic Mixed Precision",
                     "Loading `train_dataloader`", "`Trainer.fit` stopped:", "HPU available:",
                     "You are using a CUDA device",
                     # the learning-rate finder saving and restoring the network around its test
                     "Restoring states from the checkpoint", "Restored all states from the checkpoint",
                     "`weights_only` was not set, defaulting to `False`")


QUIET_WARNINGS = (
    r".*Checkpoint directory .* exists and is not empty",
    r".*isinstance\(treespec, LeafSpec\)",
    r".*does not have many workers",
    r".*could not find the monitored key",  # a max_steps stop mid-epoch
    r".*module\(s\) in eval mode",  # frozen BatchNorm, on purpose
)


class _DropLightningChatter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(marker in message for marker in LIGHTNING_CHATTER)


@contextmanager
def lightning_quieted() -> Iterator[None]:
    """Within the block, drop Lightning's advertising and the warnings zoo's own layout triggers on purpose.

    The filters are removed again afterwards, so a caller's own warnings and log handlers are as they were.
    """
    handlers = logging.getLogger("pytorch_lightning").handlers  # every pytorch_lightning logger passes through
    chatter = _DropLightningChatter()
    for handler in handlers:
        handler.addFilter(chatter)
    try:
        with warnings.catch_warnings():
            for message in QUIET_WARNINGS:
                warnings.filterwarnings("ignore", message=message)
            yield
    finally:
        for handler in handlers:
            handler.removeFilter(chatter)
