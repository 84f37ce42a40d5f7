"""The settings of ``zoo evaluate``, free of torch: the CLI makes its flags from them and ``evaluate`` takes its
defaults from them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from finetune.config import option
from finetune.names import EVALUATION_SPLITS, TTA_HELP
from zoo.tta import TtaMode


@dataclass(frozen=True)
class EvaluateSettings:
    """Which images ``evaluate`` measures a model on, how, and where the results go."""

    data: str | None = option(None, "image folder, one sub-folder per class, or shards of zoo data optimize (a folder "
                                    "or a URL) (default for a run folder: its own split)", metavar="DIR")
    split: str | None = option(None, "test (default for a run folder that held one out), val (default for folders "
                                     "with train/ and val/, and runs without test images), or all (default for a "
                                     "plain class folder)", choices=EVALUATION_SPLITS)
    out: Path | None = option(None, "folder for metrics.json, confusion_matrix.csv/.png, top_losses.csv/.png and "
                                    "report.md (default: RUN/eval-SPLIT for a run's own data, else "
                                    "./eval-NAME-SPLIT)", metavar="DIR")
    batch_size: int = option(64, "")
    top_losses: int = option(16, "images of highest loss in top_losses.png (all of them are in top_losses.csv)",
                             metavar="N")
    tta: TtaMode | None = option(None, TTA_HELP)
