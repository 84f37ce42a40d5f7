"""The typed run config and its YAML form: merging, precedence and one-line rejections."""

from __future__ import annotations

import argparse
import os
import re
import typing
from pathlib import Path
from typing import Any, Literal

import pytest

from finetune.config import (
    ConfigError,
    DataConfig,
    RunConfig,
    alternatives,
    commented_yaml,
    config_fields,
    load_config,
    merge,
    read_yaml,
    resumable_settings,
    save_config,
    uncompared_settings,
    unvaried_settings,
)
from finetune.training.run import train
from zoo_cli import finetune_command
from zoo_cli.finetune_command import flag_of, overrides_from_flags
from zoo_cli.main import build_parser

ROOT = Path(__file__).parents[2]


def test_partial_file_merges_over_defaults_and_flags_override_it(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("model:\n  arch: resnet50\ntrainer:\n  epochs: 3\n  devices: 2\n", encoding="utf-8")
    config = load_config(path)
    assert config.model.arch == "resnet50"
    assert config.trainer.epochs == 3
    assert config.trainer.devices == "2"
    assert config.data == RunConfig().data  # untouched sections keep their defaults
    args = build_parser().parse_args(["finetune", "--config", str(path), "--epochs", "5",
                                      "--freeze", "until-epoch", "2"])
    final = merge(config, overrides_from_flags(args))
    assert final.trainer.epochs == 5
    assert final.model.arch == "resnet50"
    assert (final.optim.freeze, final.optim.unfreeze_epoch) == ("until-epoch", 2)


def test_saved_config_loads_back_identical(tmp_path: Path) -> None:
    config = merge(RunConfig(), {"optim": {"lr": 0.01, "freeze": "backbone"}, "data": {"image_size": 64}})
    save_config(config, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == config


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("trainer:\n  epoch: 3\n", "has unknown key trainer.epoch (did you mean trainer.epochs?)"),
        ("optimizer:\n  lr: 0.1\n", "has unknown key optimizer (did you mean optim?)"),
        ("trainer:\n  zzz: 1\n", "has unknown key trainer.zzz (known: trainer.epochs, trainer.max_steps,"),
        ("optim:\n  lr: fast\n", "optim.lr must be a number of at least 0.0 or auto or null, got 'fast'"),
        ("optim:\n  lr: [1]\n", "optim.lr must be a number of at least 0.0 or auto or null, got a list of 1: [1]"),
        ("data:\n  batch_size: 8.5\n", "data.batch_size must be a whole number of at least 1, got 8.5"),
        ("optim:\n  freeze: everything\n", "optim.freeze must be one of auto, none, backbone, until-epoch"),
        ("data: 3\n", "data must be a mapping, got 3"),
        ("data: [\n", "is not valid YAML"),
        ("data:\n  feature_views: -1\n", "data.feature_views must be a whole number of at least 0, got -1"),
        ("optim:\n  lr: .nan\n", "optim.lr must be a number of at least 0.0 or auto or null, got nan"),
        ("data:\n  feature_views: 4\n  augment: none\n",
         "set --augment standard (or another preset), or --feature-views 0"),
        ("trainer:\n  epochs: 3\n  epochs: 4\n", "key 'epochs' appears twice in one mapping"),
        ("trainer:\n  seed: -1\n", "trainer.seed must be a whole number from 0 to 4294967295, got -1"),
        ("trainer:\n  epochs: " + "9" * 5000 + "\n", "Exceeds the limit (4300 digits)"),
        ("a: " + "[" * 100_000, "nested too deep"),
        ("data:\n  image_size: 100000\n", "data.image_size must be a whole number from 8 to 4096 or null, got 100000"),
        ("trainer:\n  epochs: true\n", "trainer.epochs must be a whole number of at least 1 or null, got True"),
        ("trainer:\n  epochs: 2024-01-01\n", "trainer.epochs must be a whole number of at least 1 or null, got "
                                              "datetime.date(2024, 1, 1)"),
        ("data:\n  val_fraction: 0.6\n  test_fraction: 0.5\n", "data.test_fraction must leave training images"),
        ("optim:\n  ema: 1.5\n", "optim.ema must be a number above 0.0 and below 1.0 or auto or off, got 1.5"),
        ("? [a, b]\n: 1\n", "is not valid YAML"),
    ],
)
def test_bad_files_are_rejected_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert message in str(error.value)
    assert str(path) in str(error.value)
    assert "\n" not in str(error.value)


def test_yaml_merge_keys_are_read(tmp_path: Path) -> None:
    path = tmp_path / "merged.yaml"
    # Merged keys may be given again beside "<<" (that is what merging is for): not a key given twice.
    path.write_text("trainer:\n  <<: {epochs: 3, seed: 7}\n  epochs: 4\n", encoding="utf-8")
    config = load_config(path)
    assert (config.trainer.epochs, config.trainer.seed) == (4, 7)


def test_a_fifo_a_device_or_binary_data_as_config_is_one_line(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)  # reading it would wait for a writer forever
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(bytes(range(256)))
    for path, message in ((fifo, "not a regular file"), (Path("/dev/zero"), "not a regular file"),
                          (binary, "can't decode"), (tmp_path / "none.yaml", "does not exist")):
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_config(path)


@pytest.mark.parametrize("freeze", [["until-epoch"], ["backbone", "2"], ["sometimes"]])
def test_bad_freeze_flags_are_rejected(freeze: list[str]) -> None:
    args = build_parser().parse_args(["finetune", "--freeze", *freeze])
    with pytest.raises(ConfigError, match="--freeze"):
        overrides_from_flags(args)


def test_a_yaml_bomb_under_a_known_key_is_refused_in_a_short_line(tmp_path: Path) -> None:
    # Nine levels of nine aliases: a billion strings if anything expanded it (repr() in a message did).
    levels = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    path = tmp_path / "bomb.yaml"
    path.write_text("out:\n" + "".join(f"  {line}\n" for line in levels), encoding="utf-8")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert "holds more than 10000 values (YAML aliases?)" in str(error.value)
    assert len(str(error.value)) < 400


def _finetune_parser() -> argparse.ArgumentParser:
    commands = argparse.ArgumentParser().add_subparsers()
    finetune_command.add_parsers(commands)
    return commands.choices["finetune"]


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    return {flag for action in parser._actions for flag in action.option_strings} - {"-h", "--help"}


def _options_doc() -> str:
    return (ROOT / "docs" / "options.md").read_text(encoding="utf-8")


def test_default_yaml_lists_every_field_in_order_and_loads_to_the_defaults() -> None:
    path = ROOT / "configs" / "default.yaml"
    document = read_yaml(path)
    listed: list[str] = []
    for section, values in document.items():
        listed += [f"{section}.{name}" for name in values] if isinstance(values, dict) else [section]
    assert listed == [key for key, _, _ in config_fields()]
    assert load_config(path) == RunConfig()


def test_default_yaml_is_the_output_of_print_config(capsys: pytest.CaptureFixture[str]) -> None:
    from zoo_cli.main import main

    assert main(["finetune", "--print-config"]) == 0
    printed = capsys.readouterr().out
    written = (ROOT / "configs" / "default.yaml").read_text(encoding="utf-8")
    assert printed == written, "configs/default.yaml is out of step: zoo finetune --print-config > configs/default.yaml"
    assert "  dropout: 0.2            # dropout before the new linear head (0.2)" in written  # each help, once


def test_print_config_shows_the_settings_a_run_would_get(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("optim: {freeze: backbone}\n", encoding="utf-8")
    parser = build_parser()
    config = merge(load_config(path), overrides_from_flags(parser.parse_args(["finetune", "--epochs", "3"])))
    text = commented_yaml(config)
    assert "  freeze: backbone" in text
    assert "  epochs: 3 " in text
    written = tmp_path / "printed.yaml"
    written.write_text(text, encoding="utf-8")
    assert load_config(written) == config  # the comments are comments: the file reads back as the run


def test_the_policy_sets_come_from_the_fields() -> None:
    # What --resume may change: how long and where a run trains, never what it is (data, network, recipe).
    assert resumable_settings() == {f"trainer.{name}" for name in (
        "epochs", "max_steps", "patience", "precision", "threads", "accelerator", "devices", "num_nodes", "strategy",
        "checkpoint_interval", "logger", "tta")} | {"data.num_workers", "data.cache"}
    assert unvaried_settings() == {
        "data.path": "one data set per comparison", "data.val_fraction": "the split is shared",
        "data.test_fraction": "the split is shared", "model.arch": "list them under archs",
        "trainer.seed": "list them under seeds (--seeds)", "out": "one folder per comparison"}
    assert uncompared_settings() == {"out", "model.arch", "trainer.seed"}


def test_the_option_tables_in_docs_are_generated_from_the_parsers() -> None:
    from zoo_cli.reference import option_table, rendered

    text = _options_doc()
    assert rendered(text) == text, "docs/options.md is out of step: run python -m zoo_cli.reference"
    table = option_table("finetune")
    rows = [line for line in table.splitlines() if line.startswith("| `--")]
    documented = {flag for row in rows for flag in re.findall(r"--[a-z][a-z-]*", re.split(r"(?<!\\)\|", row)[1])}
    assert documented == _flags(_finetune_parser())
    assert table in text
    assert "| `--image-size IMAGE_SIZE` |  | input size in px" in table  # the field's own help, one source


def test_every_config_field_has_a_flag_or_the_docs_say_it_has_none() -> None:
    flags, doc = _flags(_finetune_parser()), _options_doc()
    for key, item, _ in config_fields():
        assert item.metadata.get("help"), f"{key} has no help text"
        flag = flag_of(item)
        assert flag in flags if flag else f"`{key}`" in doc, key


def _sample(kind: Any) -> tuple[list[str], Any]:
    """Command-line words for a value of ``kind`` that no default holds and every check accepts, and that value."""
    first = alternatives(kind)[0]
    if typing.get_origin(first) is Literal:
        return [typing.get_args(first)[-1]], typing.get_args(first)[-1]
    return {int: (["9"], 9), float: (["0.25"], 0.25), str: (["x"], "x"), bool: ([], True)}[first]


@pytest.mark.parametrize("key", [key for key, item, _ in config_fields() if flag_of(item)])
def test_each_flag_sets_its_config_field(key: str) -> None:
    item, kind = finetune_command.FIELDS[key]
    words, expected = (["until-epoch", "3"], "until-epoch") if key == "optim.freeze" else _sample(kind)
    config = merge(RunConfig(), overrides_from_flags(_finetune_parser().parse_args([flag_of(item), *words])))
    section, _, name = key.rpartition(".")
    assert getattr(getattr(config, section) if section else config, name) == expected


@pytest.mark.parametrize("key", [key for key, _, kind in config_fields() if typing.get_origin(kind) is Literal])
def test_a_value_outside_a_fields_choices_is_refused_naming_the_key(key: str) -> None:
    section, name = key.split(".")
    with pytest.raises(ConfigError, match=f"^{key} must be (one of .*|\\w+ or [\\w-]+), got 'sometimes'$"):
        merge(RunConfig(), {section: {name: "sometimes"}})


def test_a_config_built_in_python_is_checked_when_training_starts(tmp_path: Path) -> None:
    config = RunConfig(data=DataConfig(path=str(tmp_path), batch_size=0), out=str(tmp_path / "run"))
    with pytest.raises(ConfigError, match=r"^data\.batch_size must be a whole number of at least 1, got 0$"):
        train(config)
    assert not (tmp_path / "run").exists()
