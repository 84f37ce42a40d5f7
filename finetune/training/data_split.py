"""A run's images split into train / val / test (or the split its shards were written with), and what a user should
know of it said before any work: the counts, classes without held-out images, imbalance."""

from __future__ import annotations

from dataclasses import asdict

from finetune.config import ConfigError, DataConfig, RunConfig
from finetune.data.builtin import resolve_data
from finetune.data.shards import ShardSplit, is_shards, load_shards
from finetune.data.split import Split, class_counts, classes_without, imbalance_ratio, split_folder
from finetune.runtime.console import say
from zoo.tables import listed

IMBALANCE_WARNING_RATIO = 3.0


def _refuse_other_fractions(config: RunConfig, shards: ShardSplit) -> None:
    """Shards hold the split they were written with: other fractions would be silently ignored."""
    written = shards.fractions or asdict(DataConfig())  # shards of before the manifest recorded them: the defaults
    asked = [f"--{name.replace('_', '-')} {getattr(config.data, name)}" for name in ("val_fraction", "test_fraction")
             if getattr(config.data, name) != written[name]]
    if asked:
        raise ConfigError(f"{' and '.join(asked)} cannot change the split of the shards {config.data.path}, made when "
                          "they were written: drop it, or write new shards with zoo data optimize IMAGES --out NEW "
                          f"{' '.join(asked)}")


def make_split(config: RunConfig) -> Split:
    """Scan and split ``config.data.path`` (nothing is written yet) and report what was found."""
    split: Split
    if is_shards(config.data.path):  # split when written (zoo data optimize)
        split = load_shards(config.data.path)
        _refuse_other_fractions(config, split)
    else:
        split = split_folder(resolve_data(config.data.path), val_fraction=config.data.val_fraction,
                             test_fraction=config.data.test_fraction, seed=config.trainer.seed)
    counts = class_counts(split.train, split.classes)
    say(f"{len(split.classes)} classes, {len(split.train)} train / {len(split.val)} val / {len(split.test)} test "
         "images: " + ", ".join(f"{name} {count}" for name, count in counts.items()))
    if not split.val:
        raise ConfigError(f"no validation images in {config.data.path}: every class has a single image, and a run "
                          "needs images it does not train on to choose its checkpoint; add images (3 or more per "
                          "class) or a val/ folder")
    for part, use in (("val", "choosing the checkpoint"), ("test", "the test error")):
        images = getattr(split, part)
        missing = classes_without(images, split.classes)
        if images and missing:
            say(f"{len(missing)} of {len(split.classes)} classes have no {part} images ({listed(missing)}): they "
                f"take no part in {use}; give each class 3 or more images", warning=True)
    if not split.test:
        say("no test images (data.test_fraction 0 and no test/ folder): every error reported is on the validation "
             "images that chose the checkpoint, so it is optimistic", warning=True)
    ratio = imbalance_ratio(counts)
    if ratio >= IMBALANCE_WARNING_RATIO and not config.data.class_weights:
        say(f"classes are imbalanced (largest/smallest = {ratio:.1f}): consider --class-weights", warning=True)
    return split
