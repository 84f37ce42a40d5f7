"""Property-based tests (hypothesis) for the two readers of user input: the config loader and the folder scan.

Whatever they are given, they either work or refuse with one short line; they never raise anything else.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from finetune.config import ConfigError, RunConfig, load_config, merge, save_config
from finetune.data.scan import IMAGE_SUFFIXES, DataError, is_image_file, scan_folder
from finetune.data.split import split_folder

SECTIONS = {"data": ("path", "image_size", "batch_size", "val_fraction", "augment", "mixup", "cache"),
            "model": ("arch", "weights", "dropout"),
            "optim": ("lr", "weight_decay", "freeze", "unfreeze_epoch", "label_smoothing"),
            "trainer": ("epochs", "max_steps", "patience", "precision", "devices", "seed")}
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
                    st.text(max_size=20))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                         max_size=3), max_leaves=8)
KEYS = st.sampled_from([f"{section}.{name}" for section, names in SECTIONS.items() for name in names]
                       + ["out", "data.nonsense", "trainer"])


def _nested(pairs: dict[str, object]) -> dict[str, object]:
    document: dict[str, object] = {}
    for key, value in pairs.items():
        section, _, name = key.partition(".")
        if name and isinstance(document.setdefault(section, {}), dict):
            document[section][name] = value  # type: ignore[index]
        elif not name:
            document[section] = value
    return document


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(KEYS, VALUES, max_size=4))
def test_any_yaml_document_loads_or_is_refused_in_one_short_line(pairs: dict[str, object]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "run.yaml"
        path.write_text(yaml.safe_dump(_nested(pairs)), encoding="utf-8")
        try:
            config = load_config(path)
        except ConfigError as error:
            message = str(error)
            assert "\n" not in message
            assert len(message) < 600
            assert str(path) in message
        else:  # what loads saves and loads back unchanged
            assert isinstance(config, RunConfig)
            save_config(config, Path(folder) / "saved.yaml")
            assert load_config(Path(folder) / "saved.yaml") == config


@settings(max_examples=60, deadline=None)
@given(st.fixed_dictionaries({}, optional={
    "epochs": st.integers(1, 500), "patience": st.integers(1, 50), "seed": st.integers(0, 2**32 - 1),
    "max_steps": st.integers(1, 10**6) | st.just(-1), "precision": st.sampled_from(["auto", "32", "bf16-mixed"])}))
def test_valid_trainer_settings_round_trip(trainer: dict[str, object]) -> None:
    config = merge(RunConfig(), {"trainer": trainer})
    with tempfile.TemporaryDirectory() as folder:
        save_config(config, Path(folder) / "config.yaml")
        assert load_config(Path(folder) / "config.yaml") == config


def _png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4 + seed % 5, 4), (seed % 256, 0, 0)).save(buffer, "PNG")
    return buffer.getvalue()


FILE_KINDS = st.sampled_from(["image", "empty", "garbage", "truncated"])
NAMES = st.text(st.characters(codec="utf-8", exclude_characters="/\x00", exclude_categories=("Cs",)), min_size=1,
                max_size=12).filter(lambda name: name not in (".", ".."))
SUFFIXES = st.sampled_from(sorted(IMAGE_SUFFIXES) + [".PNG", ".txt", ""])
TREES = st.dictionaries(NAMES, st.lists(st.tuples(NAMES, SUFFIXES, FILE_KINDS, st.booleans()), max_size=5),
                        max_size=4)


def _write_tree(root: Path, tree: dict[str, list[tuple[str, str, str, bool]]]) -> dict[Path, str]:
    """The tree on disk; the kind of each file written, by path."""
    written = {}
    for folder, files in tree.items():
        for index, (stem, suffix, kind, nested) in enumerate(files):
            path = root / folder / ("deeper" if nested else "") / f"{index}-{stem}{suffix}"
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                content = {"image": _png(index), "empty": b"", "garbage": b"not an image at all",
                           "truncated": _png(index)[:20]}[kind]
                path.write_bytes(content)
            except OSError:  # a name this filesystem refuses (too long in bytes): not part of the tree
                continue
            written[path] = kind
    return written


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TREES)
def test_the_scan_of_any_folder_accounts_for_every_image_file_or_refuses_in_one_line(tree) -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        written = _write_tree(root, tree)
        try:
            result = scan_folder(root)
        except DataError as error:
            refusal = str(error)
        else:
            refusal = None
        if refusal is not None:
            assert "\n" not in refusal
            return
        candidates = {path for path in written if is_image_file(path) and not _hidden_below(path, root)}
        used = {sample.path for sample in result.samples}
        skipped = {file.path for file in result.skipped}
        assert used | skipped == candidates
        assert not used & skipped
        assert all(written[path] == "image" for path in used)
        assert all(written[path] != "image" for path in skipped)
        for sample in result.samples:  # each labelled by its top-level class folder
            assert result.classes[sample.label] == sample.path.relative_to(root).parts[0]
        assert [(s.label, s.path) for s in result.samples] == sorted((s.label, s.path) for s in result.samples)


def _hidden_below(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts[:-1])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(1, 12), min_size=2, max_size=5), st.floats(0.05, 0.5), st.floats(0.0, 0.4),
       st.integers(0, 3))
def test_a_split_is_a_partition_that_keeps_a_training_image_of_every_class(counts, val, test, seed) -> None:
    if val + test >= 1:
        return
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        for label, count in enumerate(counts):
            for index in range(count):
                (root / f"class{label}").mkdir(exist_ok=True)
                (root / f"class{label}" / f"{index}.png").write_bytes(_png(index))
        split = split_folder(root, val_fraction=val, test_fraction=test, seed=seed)
        parts = [split.train, split.val, split.test]
        paths = [sample.path for part in parts for sample in part]
        assert len(paths) == len(set(paths)) == sum(counts)
        assert {sample.label for sample in split.train} == set(range(len(counts)))
        if test == 0:
            assert not split.test
