"""The settings of ``zoo data optimize``, free of torch: the CLI makes its flags from them and ``optimize_folder``
takes its defaults from them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from finetune.config import DataConfig, TrainerConfig, option


@dataclass(frozen=True)
class OptimizeSettings:
    """How a folder is split and written as shards; the split's defaults are a run's, so both split alike."""

    val_fraction: float = option(DataConfig.val_fraction, "share held out for validation when DIR has no val/ folder "
                                                          "(0.15)")
    test_fraction: float = option(DataConfig.test_fraction, "share held out for the test when DIR has no test/ "
                                                            "folder (0.15)")
    seed: int = option(TrainerConfig.seed, "seed of the split (0, as zoo finetune's)")
    workers: int | None = option(None, "processes writing chunks (default: the cores, 8 at most)", metavar="N")
    decoded: int | Literal["auto", "none"] = option(
        "auto", "auto: images up to 96×96 px stored decoded at their own size (lossless, and their decoding is most of "
                "what reading them costs), larger ones as the file's bytes; none: every file's own bytes; SIDE: every "
                "image decoded, a uint8 square of SIDE px (shorter side resized, centred: give the run's resize size, "
                "e.g. 36 for 32 px crops)", metavar="auto|none|SIDE")
