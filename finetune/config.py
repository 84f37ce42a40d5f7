"""The one typed configuration of a fine-tuning run, and its YAML form.

A YAML file in ``configs/`` uses exactly these section and field names; a partial file merges over the
defaults; unknown keys and wrong types are rejected naming the key. Precedence: defaults < YAML < CLI.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import reprlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from zoo._io import write_text_atomic
from zoo.errors import ZooError

FREEZE_MODES = ("auto", "none", "backbone", "until-epoch")
PRECISIONS = ("auto", "32", "bf16-mixed", "16-mixed")
AUGMENTS = ("auto", "standard", "light", "trivial", "randaugment", "autoaugment", "augmix", "none")
OPTIMIZERS = ("adamw", "sgd")
CACHES = ("auto", "memory", "disk", "none")
MEMORY_FORMATS = ("auto", "channels_last", "contiguous")
LOGGERS = ("none", "csv", "tensorboard", "mlflow")


MAX_SEED = 2**32 - 1
_QUOTE = reprlib.Repr()  # keyword arguments only from Python 3.12
_QUOTE.maxlevel, _QUOTE.maxlist, _QUOTE.maxdict, _QUOTE.maxstring, _QUOTE.maxother = 2, 4, 4, 60, 60
CONFIG_FILE = "config.yaml"  # in every run folder: the resolved settings of the run


class ConfigError(ZooError):
    """A configuration value or key that zoo cannot use."""


def _choice(section: str, name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{section}.{name} must be one of {', '.join(choices)}, got '{value}'")


def _at_least(section: str, name: str, value: float | None, minimum: float) -> None:
    # NaN compares False with everything, so "value < minimum" alone would let it through.
    if value is not None and (not math.isfinite(value) or value < minimum):
        raise ConfigError(f"{section}.{name} must be a finite number of at least {minimum}, got {value}")


@dataclass(frozen=True)
class DataConfig:
    """Where the images are and how they are fed."""

    path: str = "digits"
    image_size: int | None = None  # None: the architecture's default input size
    val_fraction: float = 0.15  # held out to choose the checkpoint and fit the temperature
    test_fraction: float = 0.15  # held out from the start, measured once at the end; 0: none
    batch_size: int = 32
    num_workers: int | None = None  # None: chosen from the machine
    augment: str = "auto"  # auto: chosen from the data (finetune.recipe); presets in finetune.data.transforms
    mixup: float = 0.0  # MixUp's Beta(α, α) for training batches; 0: off
    cutmix: float = 0.0  # CutMix's α; 0: off (with both on, each batch gets one of them)
    class_weights: bool = False
    cache: str = "auto"  # decode-once images / cached backbone features; "none" turns both off
    feature_views: int = 0  # frozen backbone + cache: 0 = one plain view per image; K = K augmented views

    def __post_init__(self) -> None:
        _choice("data", "augment", self.augment, AUGMENTS)
        _choice("data", "cache", self.cache, CACHES)
        _at_least("data", "batch_size", self.batch_size, 1)
        _at_least("data", "image_size", self.image_size, 8)
        _at_least("data", "num_workers", self.num_workers, 0)
        _at_least("data", "feature_views", self.feature_views, 0)
        _at_least("data", "mixup", self.mixup, 0.0)
        _at_least("data", "cutmix", self.cutmix, 0.0)
        if self.feature_views and self.augment == "none":
            raise ConfigError(f"data.feature_views = {self.feature_views} asks for augmented views but data.augment is "
                              "none: set --augment standard (or another preset), or --feature-views 0")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction must lie between 0 and 1, got {self.val_fraction}")
        if not 0.0 <= self.test_fraction < 1.0 or self.val_fraction + self.test_fraction >= 1.0:
            raise ConfigError(f"data.test_fraction must lie in [0, 1) and leave training images beside "
                              f"data.val_fraction {self.val_fraction}, got {self.test_fraction}")


@dataclass(frozen=True)
class ModelConfig:
    """Which network, which starting weights, and the new head."""

    arch: str = "resnet18"
    weights: str = "default"  # default | none | a weight tag | a file path
    dropout: float = 0.2
    memory_format: str = "auto"

    def __post_init__(self) -> None:
        _choice("model", "memory_format", self.memory_format, MEMORY_FORMATS)
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must lie in [0, 1), got {self.dropout}")


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser, schedule and what is trained when."""

    optimizer: str = "adamw"
    lr: float | str | None = None  # None: from the recipe; "auto": the range test on the training split
    weight_decay: float = 0.01
    momentum: float = 0.9
    warmup_fraction: float = 0.05
    label_smoothing: float = 0.0
    freeze: str = "auto"  # auto (recipe) | none | backbone (linear probe) | until-epoch (freeze, then unfreeze)
    unfreeze_epoch: int = 1
    backbone_lr_mult: float | None = None  # None: 0.1 for a pretrained full fine-tune, else 1 (the recipe)

    def __post_init__(self) -> None:
        _choice("optim", "optimizer", self.optimizer, OPTIMIZERS)
        _choice("optim", "freeze", self.freeze, FREEZE_MODES)
        if isinstance(self.lr, str) and self.lr != "auto":
            raise ConfigError(f"optim.lr must be a number or auto, got '{self.lr}'")
        for name in ("lr", "weight_decay", "momentum", "warmup_fraction", "label_smoothing", "backbone_lr_mult"):
            if not isinstance(getattr(self, name), str):  # None (left to the recipe) passes, like a number
                _at_least("optim", name, getattr(self, name), 0.0)
        _at_least("optim", "unfreeze_epoch", self.unfreeze_epoch, 1)
        if self.warmup_fraction >= 1 or self.label_smoothing >= 1:
            raise ConfigError("optim.warmup_fraction and optim.label_smoothing must be below 1")


@dataclass(frozen=True)
class TrainerConfig:
    """Lightning's side: length, precision, devices, distribution, seed."""

    epochs: int | None = None  # None: from the data size and the weights (the recipe)
    max_steps: int = -1  # -1: no limit (quick trials set a few steps)
    patience: int | None = None  # stop after this many epochs without a better val top-1 error; None: never
    precision: str = "auto"
    accelerator: str = "auto"
    devices: str = "auto"  # "auto", a count ("2") or a list ("0,1")
    num_nodes: int = 1
    strategy: str = "auto"
    seed: int = 0
    logger: str = "none"  # Lightning's logger beside metrics.csv: none | csv | tensorboard | mlflow

    def __post_init__(self) -> None:
        _choice("trainer", "precision", self.precision, PRECISIONS)
        _choice("trainer", "logger", self.logger, LOGGERS)
        _at_least("trainer", "epochs", self.epochs, 1)
        _at_least("trainer", "num_nodes", self.num_nodes, 1)
        _at_least("trainer", "patience", self.patience, 1)
        if not 0 <= self.seed <= MAX_SEED:
            raise ConfigError(f"trainer.seed must be a whole number from 0 to {MAX_SEED} (numpy's range), got {self.seed}")
        if self.max_steps != -1 and self.max_steps < 1:
            raise ConfigError(f"trainer.max_steps must be -1 (no limit) or at least 1, got {self.max_steps}")


@dataclass(frozen=True)
class RunConfig:
    """Everything one fine-tuning run needs; each component receives only its own section."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    out: str | None = None  # the run folder; None: runs/<arch>-<timestamp>


def _check_type(key: str, value: Any, annotation: Any) -> Any:
    options = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    if value is None and type(None) in options:
        return None
    for option in options:
        if option is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if option is str and isinstance(value, (int, float)) and not isinstance(value, bool) and key.endswith(".devices"):
            return str(value)
        if option in (int, float, str, bool) and type(value) is option:
            return value
    names = " or ".join("null" if o is type(None) else o.__name__ for o in options)
    raise ConfigError(f"config key '{key}' must be {names}, got {type(value).__name__} {quoted(value)}")


def quoted(value: object) -> str:
    """``repr(value)`` cut to a few dozen characters: a YAML bomb's value must not be expanded into a message."""
    return _QUOTE.repr(value)


def _build(cls: type, values: dict[str, Any], prefix: str, base: Any) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"config key '{prefix.rstrip('.') or 'top level'}' must be a mapping of fields")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in values:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1) if isinstance(key, str) else []
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else f" (known: {', '.join(sorted(known))})"
            raise ConfigError(f"unknown config key {quoted(f'{prefix}{key}')}{hint}")
    updates = {}
    for name, value in values.items():
        annotation = hints[name]
        if dataclasses.is_dataclass(annotation):
            updates[name] = _build(annotation, value, f"{prefix}{name}.", getattr(base, name))
        else:
            updates[name] = _check_type(f"{prefix}{name}", value, annotation)
    return dataclasses.replace(base, **updates)


def merge(config: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """``config`` with the nested ``overrides`` applied (validated like a YAML file)."""
    return _build(RunConfig, overrides, "", config)


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, typing.Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {quoted(key)} appears twice in one mapping: keep one", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path, kind: str = "config") -> dict[str, Any]:
    """The mapping in a YAML file; a missing file, bad YAML or a non-mapping is a one-line error."""
    if not path.is_file():
        raise ConfigError(f"{kind} file {path} does not exist: see configs/ for examples")
    try:
        values = yaml.load(path.read_text(encoding="utf-8"), Loader=_StrictLoader) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{kind} file {path} is not valid YAML: {str(error).splitlines()[0]}") from error
    if not isinstance(values, dict):
        raise ConfigError(f"{kind} file {path} must hold a mapping of sections (data, model, optim, trainer)")
    return values


def load_config(path: str | Path, base: RunConfig | None = None) -> RunConfig:
    """Read a YAML file over ``base`` (the defaults when omitted)."""
    path = Path(path)
    values = read_yaml(path)
    try:
        return merge(base or RunConfig(), values)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None


def to_dict(config: RunConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)


def save_config(config: RunConfig, path: Path) -> None:
    """Write the resolved configuration (every field) as YAML."""
    write_text_atomic(path, yaml.safe_dump(to_dict(config), sort_keys=False, allow_unicode=True))
