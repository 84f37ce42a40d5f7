"""The one typed configuration of a fine-tuning run, and its YAML form.

A YAML file in ``configs/`` uses exactly these section and field names; a partial file merges over the
defaults; unknown keys, wrong types and values out of their bounds are rejected naming the key, by the schema
layer every file of zoo goes through (``zoo.schema``). Precedence: defaults < YAML < CLI. Each field carries its
``--help`` text (``option``): the CLI makes its flags from these fields. The bounds are ``annotated_types``
markers, so the command line reads this module without importing pydantic.
"""

from __future__ import annotations

import dataclasses
import functools
import reprlib
import textwrap
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from annotated_types import Ge, Gt, Le, Lt

from zoo._io import read_text, write_text_atomic
from zoo.errors import ZooError, first_line

MAX_SEED = 2**32 - 1
_QUOTE = reprlib.Repr()  # keyword arguments only from Python 3.12
_QUOTE.maxlevel, _QUOTE.maxlist, _QUOTE.maxdict, _QUOTE.maxstring, _QUOTE.maxother = 2, 4, 4, 60, 60
CONFIG_FILE = "config.yaml"  # in every run folder: the resolved settings of the run
MAX_IMAGE_SIZE = 4096  # pixels; zoo.bundle.MAX_SIDE, what a bundle accepts
CONFIG_BYTES = 1 << 20  # a config is a few hundred bytes; a bigger file is not one
MAX_VALUES = 10_000  # a config holds a few dozen values; YAML aliases can make billions of a few lines
# Each section refuses keys it does not know and numbers that are not finite.
_STRICT = {"extra": "forbid", "allow_inf_nan": False}

Count = Annotated[int, Ge(1)]
Whole = Annotated[int, Ge(0)]
NonNegative = Annotated[float, Ge(0.0)]
Fraction = Annotated[float, Ge(0.0), Lt(1.0)]  # a share of something that must leave some of it
Share = Annotated[float, Gt(0.0), Lt(1.0)]  # some of it, not all
ImageSize = Annotated[int, Ge(8), Le(MAX_IMAGE_SIZE)]  # a batch of larger images fills any memory
Seed = Annotated[int, Ge(0), Le(MAX_SEED)]  # numpy's range


class ConfigError(ZooError):
    """A configuration value or key that zoo cannot use."""


class SettingsConflict(ConfigError, ValueError):
    """Settings that cannot go together; a ValueError, so that the schema layer names the file it came from."""


FreezeMode = Literal["auto", "none", "backbone", "until-epoch"]  # named: the CLI's --freeze MODE [N] checks it


def option(default: Any, help: str, *, resumable: bool = False, not_varied: str | None = None, compared: bool = True,
           **cli: Any) -> Any:
    """A setting with its ``--help`` text, the one place it is declared: flags, docs and YAML are made from it.

    ``cli`` may give the flag where it is not ``--field-name`` (``flag``; None: no flag of its own), ``metavar``,
    ``choices``, ``type`` (what reads the flag's text) and ``required``. A run's setting also says whether
    ``--resume`` may change it (``resumable``), why ``zoo compare --vary`` refuses it (``not_varied``), and whether a
    comparison's tables tell runs apart by it (``compared``).
    """
    policy = {"resumable": resumable, "not_varied": not_varied, "compared": compared}
    return field(default=default, metadata={"help": help, **policy, **cli})


@dataclass(frozen=True)
class DataConfig:
    """Where the images are and how they are fed."""

    __pydantic_config__ = _STRICT

    path: str = option("digits", "image folder (one sub-folder per class), a built-in dataset: digits, or shards "
                                 "of zoo data optimize (a folder or a URL: s3://…)", flag="--data",
                        not_varied="one data set per comparison")
    image_size: ImageSize | None = option(None, "input size in px (default: the architecture's)")
    val_fraction: Share = option(0.15, "share of images held out to choose the checkpoint (and fit the softmax "
                                       "temperature) when there is no val/ folder (0.15)",
                                       not_varied="the split is shared")
    test_fraction: Fraction = option(0.15, "share held out from the start and measured once at the end when there is "
                                        "no test/ folder (0.15; 0: none, every figure is then validation)",
                                        not_varied="the split is shared")
    batch_size: Count = option(32, "images per training batch (32)")
    num_workers: Whole | None = option(None, "data-loader processes (default: from the machine)", resumable=True)
    # auto: finetune.training.recipe; the presets: finetune.data.transforms
    augment: Literal["auto", "standard", "light", "shift", "trivial", "randaugment", "autoaugment", "augmix",
                     "none"] = option(
        "auto", "auto: from the images and weights; standard: random resized crop + flip; light: milder crops; "
                "shift: the centre crop moved by up to 10% each way (glyphs); trivial, randaugment, autoaugment, "
                "augmix: standard + that torchvision policy; none")
    mixup: NonNegative = option(0.0, "MixUp training batches with Beta(α, α) (0: off)", metavar="ALPHA")
    cutmix: NonNegative = option(
        0.0, "CutMix training batches with α (0: off; with both on, each batch gets one of them)", metavar="ALPHA")
    class_weights: bool = option(False, "inverse-frequency loss weights")
    cache: Literal["auto", "memory", "disk", "none"] = option(
        "auto", "decode-once image cache (and, with --freeze backbone, cached backbone features); none: neither",
        resumable=True)
    feature_views: Whole = option(0, "with --freeze backbone: cache K augmented views per image (default 0: one plain "
                                   "view)", metavar="K")
    flips_change_class: bool = option(False, "a mirror image is another class (text, digits, arrows): flip "
                                             "test-time augmentation is refused for this model")

    def __post_init__(self) -> None:
        if self.feature_views and self.augment == "none":
            raise SettingsConflict(f"data.feature_views = {self.feature_views} asks for augmented views but "
                                   "data.augment is none: set --augment standard (or another preset), or "
                                   "--feature-views 0")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise SettingsConflict(f"data.test_fraction must leave training images beside data.val_fraction "
                                   f"{self.val_fraction}, got {self.test_fraction}")


@dataclass(frozen=True)
class ModelConfig:
    """Which network, which starting weights, and the new head."""

    __pydantic_config__ = _STRICT

    arch: str = option("resnet18", "registry name or timm/<name> (default: resnet18)", flag="--arch",
                            not_varied="list them under archs", compared=False)
    weights: str = option("default", "default | none | a weight tag | a .pth/.safetensors file")
    dropout: Fraction = option(0.2, "dropout before the new linear head (0.2)")
    memory_format: Literal["auto", "channels_last", "contiguous"] = option(
        "auto", "auto: channels_last for convolutional networks")


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser, schedule and what is trained when."""

    __pydantic_config__ = _STRICT

    optimizer: Literal["adamw", "sgd"] = option(
        "adamw", "the optimiser; the learning rate follows --schedule after a linear warm-up")
    lr: NonNegative | Literal["auto"] | None = option(
        None, "a number, or auto: a range test on the training split picks it (default: from the recipe)")
    weight_decay: NonNegative = option(0.01, "weight decay, not on biases and normalisation parameters (0.01)")
    momentum: NonNegative = option(0.9, "sgd's momentum (a config file setting)", flag=None)
    warmup_fraction: Fraction = option(0.05, "share of steps with linear warm-up before the cosine decay (a config "
                                          "file setting)", flag=None)
    label_smoothing: Fraction = option(0.0, "label smoothing of the loss (0: off)")
    schedule: Literal["auto", "cosine", "plateau"] = option(
        "auto", "the rate after the warm-up: cosine over --epochs; plateau: held until the validation loss (at its "
                "best temperature) falls no more than its noise (1%, half its standard error) in 2 epochs (judged "
                "from 45% of --epochs), then annealed over a third as many epochs, and the run stops there "
                "(--epochs: the ceiling); auto: plateau when zoo chooses a from-scratch run's epochs, else cosine")
    freeze: FreezeMode = option("auto", "auto (from the weights and device) | none | backbone (linear probe) | "
                                        "until-epoch N (freeze, then unfreeze at epoch N)", metavar="MODE")
    unfreeze_epoch: Count = option(1, "with freeze until-epoch: the epoch that unfreezes the backbone (set with "
                                    "--freeze until-epoch N)", flag=None)
    backbone_lr_mult: NonNegative | None = option(
        None, "backbone learning rate = lr × this (default: 0.1 for a pretrained full fine-tune of photos, else 1)")
    bn_stats: Literal["auto", "frozen", "batch"] = option(
        "auto", "BatchNorm statistics of the pretrained layers: frozen (kept as trained: those layers normalise in "
                "eval mode) or batch (each batch's, their running averages updated); auto: frozen when the backbone "
                "trains slower than the head, else batch")
    ema: Share | Literal["auto", "off"] = option(
        "auto", "exponential moving average of the weights: its decay (e.g. 0.999), off, or auto (from the "
                "recipe); the averaged weights are validated, chosen and exported", metavar="DECAY")


@dataclass(frozen=True)
class TrainerConfig:
    """Lightning's side: length, precision, devices, distribution, seed."""

    __pydantic_config__ = _STRICT

    epochs: Count | None = option(None, "training epochs (default: from the data size and the weights)",
                                resumable=True)
    max_steps: int = option(-1, "stop after this many optimiser steps (quick trials; -1: no limit)",
                                resumable=True)
    patience: Count | None = option(None, "stop after N epochs without a lower validation top-1 error (counted after "
                                        "unfreezing; default: never)", metavar="N", resumable=True)
    precision: Literal["auto", "32", "bf16-mixed", "16-mixed"] = option(
        "auto", "auto: bf16-mixed where the hardware runs it natively, else 32", resumable=True)
    threads: Count | None = option(None, "intra-op threads of each training process (default: the cores other "
                                         "processes and the loader workers leave free; recorded in config.yaml)",
                                   metavar="N", resumable=True)
    accelerator: str = option("auto", "auto | cpu | gpu (Lightning's)", resumable=True)
    # a string: Lightning reads "2" and "0,1"
    devices: str = option("auto", "auto, a count, or a list like 0,1", resumable=True)
    num_nodes: Count = option(1, "machines of a distributed run (Lightning's)", resumable=True)
    strategy: str = option("auto", "Lightning strategy: auto, ddp, ddp_spawn, fsdp …", resumable=True)
    seed: Seed = option(0, "seed of the split, the initial head and the batches (same seed and --threads, same "
                           "metrics on CPU)", not_varied="list them under seeds (--seeds)", compared=False)
    checkpoint_interval: NonNegative = option(60.0, "seconds of training last.ckpt may leave unsaved: it is written at "
                                                    "the end of an epoch when the next would end later (60; 0: every "
                                                    "epoch); Ctrl-C and SIGTERM always write it", metavar="SECONDS",
                                              resumable=True)
    logger: Literal["none", "csv", "tensorboard", "mlflow"] = option(
        "none", "also log to Lightning's CSV, TensorBoard or MLflow logger, in the run folder", resumable=True)
    monitor: Literal["val_error", "val_loss"] = option(
        "val_error", "what chooses best.ckpt: val_error (validation top-1 error, ties broken by the lower validation "
                     "loss; the default) or val_loss")
    tta: Literal["none", "flip", "flip-crop"] = option(
        "none", "test-time augmentation of the end-of-run test measure (and the model's default in evaluate, "
                "predict, serve): none, flip (image + mirror), flip-crop (+ four corner crops); never chooses the "
                "checkpoint", resumable=True)

    def __post_init__(self) -> None:
        if self.max_steps != -1 and self.max_steps < 1:
            raise SettingsConflict(f"trainer.max_steps must be -1 (no limit) or at least 1, got {self.max_steps}")


@dataclass(frozen=True)
class RunConfig:
    """Everything one fine-tuning run needs; each component receives only its own section."""

    __pydantic_config__ = _STRICT

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    out: str | None = option(None, "run folder (default: runs/<arch>-<timestamp>)",
                             not_varied="one folder per comparison", compared=False)

    def __post_init__(self) -> None:
        if self.trainer.tta != "none" and self.data.flips_change_class:
            raise SettingsConflict(f"trainer.tta {self.trainer.tta} mirrors the test images, but "
                                   "data.flips_change_class says a mirror image is another class: use --tta none")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def alternatives(annotation: Any) -> tuple[Any, ...]:
    """The members of a union type (``int | None``), or the type alone."""
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    return typing.get_args(annotation) if union else (annotation,)


def config_fields() -> Iterator[tuple[str, dataclasses.Field[Any], Any]]:
    """Every setting of a run as (dotted key, dataclass field, type), in the order of ``configs/default.yaml``."""
    for item in dataclasses.fields(RunConfig):
        kind = _hints(RunConfig)[item.name]
        if isinstance(kind, type) and dataclasses.is_dataclass(kind):
            yield from ((f"{item.name}.{leaf.name}", leaf, _hints(kind)[leaf.name])
                        for leaf in dataclasses.fields(kind))
        else:
            yield item.name, item, kind


def resumable_settings() -> frozenset[str]:
    """Dotted keys ``--resume`` may change: how long and where a run trains, never what it is."""
    return frozenset(key for key, item, _ in config_fields() if item.metadata["resumable"])


def unvaried_settings() -> dict[str, str]:
    """Dotted key -> why ``zoo compare --vary`` refuses it: it fixes the shared split, or has a key of its own."""
    return {key: item.metadata["not_varied"] for key, item, _ in config_fields() if item.metadata["not_varied"]}


def uncompared_settings() -> frozenset[str]:
    """Dotted keys that say where a run lives or which seed it drew, not how it was trained."""
    return frozenset(key for key, item, _ in config_fields() if not item.metadata["compared"])


HEADER = """\
# Every setting of a run with its help (zoo finetune --print-config). Copy this file and keep only what you change:
# a partial file merges over the defaults, and command-line flags override the file.
"""
COMMENT_COLUMN = 26
LINE_WIDTH = 120


def commented_yaml(config: RunConfig) -> str:
    """``config`` as YAML, each setting followed by its help as a comment (``configs/default.yaml`` for the
    defaults)."""
    lines = [HEADER.rstrip("\n")]
    section = ""
    for key, item, _ in config_fields():
        parent, _, name = key.rpartition(".")
        if parent and parent != section:
            lines.append(f"{parent}:")
        section = parent
        value = getattr(getattr(config, parent) if parent else config, name)
        setting = ("  " if parent else "") + yaml.safe_dump({name: value}, allow_unicode=True).strip()
        comments = textwrap.wrap(item.metadata["help"], LINE_WIDTH - COMMENT_COLUMN - 2, break_on_hyphens=False)
        lines.append(f"{setting.ljust(COMMENT_COLUMN - 1)} # {comments[0]}")
        lines += [f"{'':{COMMENT_COLUMN}}# {comment}" for comment in comments[1:]]
    return "\n".join(lines) + "\n"


def quoted(value: object) -> str:
    """``repr(value)`` cut to a few dozen characters: a YAML bomb's value must not be expanded into a message."""
    return _QUOTE.repr(value)


def _merged(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` laid over it, section by section (a section that is not a mapping replaces)."""
    merged = dict(base)
    for key, value in overrides.items():
        below = merged.get(key)
        merged[key] = _merged(below, value) if isinstance(below, dict) and isinstance(value, dict) else value
    return merged


def merge(config: RunConfig, overrides: dict[str, Any], origin: str = "") -> RunConfig:
    """``config`` with the nested ``overrides`` applied, checked as a whole (a ``ConfigError`` naming ``origin``,
    the key and what it must be)."""
    from zoo.schema import validate  # pydantic: only where settings are read, never for the registry commands

    if not isinstance(overrides, dict):
        raise ConfigError(f"{origin or 'the settings'} must be a mapping of sections (data, model, optim, trainer)")
    values = _merged(to_dict(config), overrides)
    trainer = values.get("trainer")
    if isinstance(trainer, dict) and type(trainer.get("devices")) is int:  # YAML's devices: 2 is Lightning's "2"
        trainer["devices"] = str(trainer["devices"])
    return validate(RunConfig, values, origin, unknown_hint=None, error=ConfigError)


MERGE_TAG = "tag:yaml.org,2002:merge"


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == MERGE_TAG:  # "<<: *defaults": its keys may be given again here, on purpose
                continue
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, typing.Hashable):  # a list as a key: PyYAML's own error names it
                break
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {quoted(key)} appears twice in one mapping: keep one", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path, kind: str = "config") -> dict[str, Any]:
    """The mapping in a YAML file; a missing file, bad YAML or a non-mapping is a one-line error."""
    try:
        text = read_text(path, limit=CONFIG_BYTES)
    except FileNotFoundError:
        raise ConfigError(f"{kind} file {path} does not exist: see configs/ for examples") from None
    except ZooError as error:  # a FIFO, a device, or a file too large to be a config
        raise ConfigError(f"{kind} file {error}") from error
    except (OSError, ValueError) as error:  # ValueError: binary data, not UTF-8 text
        reason = getattr(error, "strerror", None) or first_line(error)
        raise ConfigError(f"cannot read {kind} file {path} ({reason}): pass a YAML text file") from error
    try:
        values = yaml.load(text, Loader=_StrictLoader) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{kind} file {path} is not valid YAML: {first_line(error)}") from error
    except ValueError as error:  # an integer of thousands of digits, over Python's limit for reading one
        raise ConfigError(f"{kind} file {path} is not valid YAML: {first_line(error)}") from error
    except RecursionError as error:  # lists or mappings nested thousands deep
        raise ConfigError(f"{kind} file {path} is nested too deep to read: a config has a few sections of "
                          "settings") from error
    if not isinstance(values, dict):
        raise ConfigError(f"{kind} file {path} must hold a mapping of sections (data, model, optim, trainer)")
    if _more_values_than(values, MAX_VALUES):
        raise ConfigError(f"{kind} file {path} holds more than {MAX_VALUES} values (YAML aliases?): a {kind} holds a "
                          "few dozen settings")
    return values


def _more_values_than(values: object, limit: int) -> bool:
    """Whether ``values`` holds more than ``limit`` values, counted without expanding them all."""
    pending, count = [values], 0
    while pending:
        value = pending.pop()
        count += 1
        if count > limit:
            return True
        if isinstance(value, dict):
            pending += value.values()
        elif isinstance(value, (list, tuple, set)):
            pending += value
    return False


def load_config(path: str | Path, base: RunConfig | None = None) -> RunConfig:
    """Read a YAML file over ``base`` (the defaults when omitted)."""
    path = Path(path)
    return merge(base or RunConfig(), read_yaml(path), origin=str(path))


def to_dict(config: RunConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)


def save_config(config: RunConfig, path: Path) -> None:
    """Write the resolved configuration (every field) as YAML."""
    write_text_atomic(path, yaml.safe_dump(to_dict(config), sort_keys=False, allow_unicode=True))
