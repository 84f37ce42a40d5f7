"""zoo.json and summary.json as strict records: their schema files, unknown keys and wrong types, old bundles."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import zoo
from finetune.results.records import RunSummary
from finetune.schemas import SCHEMA_FOLDER, SCHEMAS, render
from zoo.errors import ZooError
from zoo.records import BundleMetadata, check_metadata


@pytest.mark.parametrize("name", SCHEMAS)
def test_the_schema_files_in_docs_are_generated_from_the_records(name: str) -> None:
    text = (SCHEMA_FOLDER / name).read_text(encoding="utf-8")
    assert text == render(SCHEMAS[name]), f"docs/schema/{name} is out of step: run python -m finetune.schemas"


@pytest.fixture(scope="module")
def bundle(small_bundle: Path) -> Path:
    return small_bundle


def _content(bundle: Path) -> dict:
    return json.loads((bundle / "zoo.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize(("change", "message"), [
    ({"accuracy": 0.9}, "zoo.json has unknown key accuracy"),
    ({"preprocessing": {"crop": 28, "resize": 32, "interpolation": "bilinear", "mean": [0.5] * 3, "std": [0.5] * 3,
                        "gamma": 2.2}}, "zoo.json has unknown key preprocessing.gamma"),
    ({"tta": "rotate"}, "zoo.json: tta must be one of none, flip, flip-crop, got 'rotate'"),
    ({"flips_change_class": "no"}, "zoo.json: flips_change_class must be true or false, got 'no'"),
    ({"preprocessing": {"crop": 28.0, "resize": 32, "interpolation": "bilinear", "mean": [0.5] * 3,
                        "std": [0.5] * 3}}, "zoo.json: preprocessing.crop must be a whole number, got 28.0"),
])
def test_a_zoo_json_key_it_does_not_know_or_of_the_wrong_type_is_named(bundle: Path, tmp_path: Path, change: dict,
                                                                        message: str) -> None:
    damaged = Path(shutil.copytree(bundle, tmp_path / "bundle"))
    (damaged / "zoo.json").write_text(json.dumps({**_content(bundle), **change}), encoding="utf-8")
    with pytest.raises(ZooError) as error:
        zoo.load(damaged)
    assert message in str(error.value)
    assert "make the file again" in str(error.value)
    assert "\n" not in str(error.value)


def test_a_bundle_exported_with_flat_preprocessing_still_loads(bundle: Path, small_run: Path, tmp_path: Path) -> None:
    # How zoo wrote zoo.json before the preprocessing was nested (the crop twice, as image_size and crop).
    content = _content(bundle)
    preprocessing = content.pop("preprocessing")
    flat = {**content, "image_size": preprocessing["crop"], "crop": preprocessing["crop"],
            **{key: preprocessing[key] for key in ("resize", "mean", "std", "interpolation")}}
    old = Path(shutil.copytree(bundle, tmp_path / "old"))
    (old / "zoo.json").write_text(json.dumps(flat), encoding="utf-8")

    loaded, current = zoo.load(old), zoo.load(bundle)
    assert loaded.metadata.preprocessing.crop == current.metadata.image_size
    assert loaded.metadata.to_dict() == {**current.metadata.to_dict(), "preprocessing": {
        **current.metadata.to_dict()["preprocessing"], "crop_fraction": None}}
    photo = sorted((small_run.parent / "images").glob("*/*.jpg"))[0]
    assert loaded.predict(photo) == current.predict(photo)


def test_a_zoo_json_reads_back_as_it_was_written(bundle: Path) -> None:
    content = _content(bundle)
    assert check_metadata(content, "zoo.json", BundleMetadata).to_dict() == content


@pytest.mark.parametrize(("change", "message"), [
    ({"accuracy": 0.9}, "has unknown key accuracy"),
    ({"learned": 1}, "learned must be true or false, got 1"),
    ({"selection": {"epoch": [1]}}, "selection must be a mapping to a whole number or a number or text or null"),
])
def test_a_summary_key_it_does_not_know_or_of_the_wrong_type_is_named(small_run: Path, tmp_path: Path,
                                                                       change: dict, message: str) -> None:
    content = {**json.loads((small_run / "summary.json").read_text(encoding="utf-8")), **change}
    (tmp_path / "summary.json").write_text(json.dumps(content), encoding="utf-8")
    with pytest.raises(ZooError) as error:
        RunSummary.read(tmp_path)
    assert f"{tmp_path / 'summary.json'}" in str(error.value)
    assert message in str(error.value)
    assert "train the run again" in str(error.value)
