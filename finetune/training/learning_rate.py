"""The learning rate found by Lightning's range test: ``zoo lr-find`` on its own, and ``--lr auto`` in a run."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from finetune.config import CONFIG_FILE, ConfigError, RunConfig, merge
from finetune.runtime.console import lightning_quieted, say
from finetune.runtime.folders import check_out_folder
from finetune.runtime.hardware import run_arithmetic
from finetune.training.data_split import make_split
from finetune.training.lr_finder import LrFinding
from finetune.training.setup import Setup, choose_settings, learning_rate_finding, prepare


@dataclass(frozen=True)
class LrFindResult:
    """``zoo lr-find``'s answer: the range test, and the rate zoo's recipe would train this run with."""

    finding: LrFinding
    recipe_lr: float | None  # None when the config gave a rate of its own, or "auto"


# Settings lr-find does not use: it trains no epochs, and the rate is what it measures.
LR_FIND_UNUSED = ("trainer.epochs", "optim.schedule", "optim.lr")


def find_learning_rate(config: RunConfig, folder: Path | None = None) -> LrFindResult:
    """``zoo lr-find``: the range test for ``config`` (plot and curve written to ``folder``)."""
    with lightning_quieted(), run_arithmetic():
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


def resolve_lr(config: RunConfig, setup: Setup, run_dir: Path) -> RunConfig:
    """``--lr auto``: the finder's suggestion, in the config and the module."""
    lr = learning_rate_finding(config, setup, run_dir).suggestion
    say(f"learning rate: {lr:.2e} (range test on the training split: {run_dir / 'lr_find.png'})")
    config = merge(config, {"optim": {"lr": lr}})
    setup.module.optim = config.optim
    setup.module.hparams["optim"] = dataclasses.asdict(config.optim)
    return config
