"""``--logger``: Lightning's CSV, TensorBoard or MLflow logger, writing into the run folder."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from pytorch_lightning.loggers import CSVLogger, Logger, MLFlowLogger, TensorBoardLogger

from finetune.config import ConfigError

# logger -> (the packages any one of which it needs, the pip command that brings one)
NEEDS = {
    "tensorboard": (("tensorboard", "tensorboardX"), 'pip install "zoo[tensorboard]"'),
    "mlflow": (("mlflow",), 'pip install "zoo[mlflow]"'),
}


def check_logger(name: str) -> None:
    """Refuse a logger whose package is missing, naming the pip command (before any run folder exists)."""
    if name in NEEDS:
        packages, command = NEEDS[name]
        if not any(importlib.util.find_spec(package) for package in packages):
            raise ConfigError(f"--logger {name} needs the {packages[0]} package, which is not installed: {command}")


def make_logger(name: str, run_dir: Path) -> Logger | bool:
    """The Lightning logger ``name`` writing under ``run_dir``; False for ``none``."""
    check_logger(name)
    if name == "csv":
        return CSVLogger(save_dir=run_dir, name="logs")
    if name == "tensorboard":
        return TensorBoardLogger(save_dir=run_dir, name="tensorboard")
    if name == "mlflow":
        return MLFlowLogger(experiment_name="zoo", run_name=run_dir.name,
                            tracking_uri=(run_dir / "mlruns").absolute().as_uri())
    return False
