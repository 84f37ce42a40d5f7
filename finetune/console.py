"""What a run prints: zoo's own lines (from the first process only) and Lightning's, thinned."""

from __future__ import annotations

import logging
import os
import sys
import warnings


def is_launched_worker() -> bool:
    """True in the extra processes Lightning's DDP launcher starts (they re-run the same command)."""
    return os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("NODE_RANK", "0") != "0"


def say(message: str, *, warning: bool = False) -> None:
    if not is_launched_worker():
        print(f"zoo: {'warning: ' if warning else ''}{message}", file=sys.stderr if warning else sys.stdout, flush=True)


# Lightning's start-up and shutdown lines, which open and close every log without telling the user anything
# zoo does not print itself (zoo prints the precision it chose and why).
LIGHTNING_CHATTER = ("💡", "GPU available:", "TPU available:", "Automatic Mixed Precision", "Loading `train_dataloader`",
                     "`Trainer.fit` stopped:", "HPU available:", "You are using a CUDA device",
                     # the learning-rate finder saving and restoring the network around its test
                     "Restoring states from the checkpoint", "Restored all states from the checkpoint",
                     "`weights_only` was not set, defaulting to `False`")


class _DropLightningChatter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(marker in message for marker in LIGHTNING_CHATTER)


def quiet_lightning() -> None:
    """Drop Lightning's advertising and the warnings that zoo's own layout triggers on purpose."""
    # On Lightning's own handler, so the lines of every pytorch_lightning logger pass the filter.
    for handler in logging.getLogger("pytorch_lightning").handlers:
        if not any(isinstance(existing, _DropLightningChatter) for existing in handler.filters):
            handler.addFilter(_DropLightningChatter())
    warnings.filterwarnings("ignore", message=r".*Checkpoint directory .* exists and is not empty")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    warnings.filterwarnings("ignore", message=r".*does not have many workers")
    warnings.filterwarnings("ignore", message=r".*could not find the monitored key")  # a max_steps stop mid-epoch
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode")  # frozen BatchNorm, on purpose
