"""``zoo predict`` on a real short run: top-k classes per image, unreadable files reported, exit status."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import torch

import zoo
from finetune.data.transforms import eval_transform
from finetune.shipping.sources import load_source
from tests.helpers import make_image_folder
from zoo.images import load_rgb
from zoo_cli.main import main

CLASSES = ["astronaut", "chelsea", "coffee"]


@pytest.fixture(scope="module")
def run_dir(small_run: Path) -> Path:
    return small_run


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """Six photos in class sub-folders, a file that is no image under an image name, and a text file."""
    root = make_image_folder(tmp_path / "photos", per_class=2)
    (root / "chelsea" / "broken.jpg").write_bytes(b"not a jpeg")
    (root / "notes.txt").write_text("not an image either")
    return root


def test_json_lists_every_image_and_the_unreadable_one_with_its_error(run_dir: Path, photos: Path, capsys) -> None:
    assert main(["predict", str(run_dir), str(photos), "--format", "json", "--top-k", "2"]) == 1

    results = json.loads(capsys.readouterr().out)
    assert [Path(result["path"]).relative_to(photos).as_posix() for result in results] == [
        "astronaut/0.jpg", "astronaut/1.jpg", "chelsea/0.jpg", "chelsea/1.jpg", "chelsea/broken.jpg",
        "coffee/0.jpg", "coffee/1.jpg",
    ]
    assert all(set(result) == {"path", "predictions", "error"} for result in results)
    broken = results.pop(4)
    assert broken["predictions"] == []
    assert "not an image" in broken["error"]
    for result in results:
        assert result["error"] is None
        assert len(result["predictions"]) == 2
        first, second = result["predictions"]
        assert {first["class"], second["class"]} <= set(CLASSES)
        assert first["class"] != second["class"]
        assert 1.0 >= first["probability"] >= second["probability"] > 0.0


def test_probabilities_are_the_softmax_of_the_model_on_training_preprocessing(
    run_dir: Path, photos: Path, capsys
) -> None:
    images = sorted((photos / "coffee").glob("*.jpg"))
    assert main(["predict", str(run_dir), *map(str, images), "--top-k", "10", "--format", "csv"]) == 0

    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(row["path"], row["rank"]) for row in rows] == [(str(path), str(rank)) for path in images
                                                             for rank in (1, 2, 3)]
    model = load_source(run_dir).model
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    # The validation transform of training, rebuilt from the registry entry, not from the checkpoint.
    transform = eval_transform(zoo.get_spec("small_cnn").preprocessing.at(summary["image_size"]))
    expected = model.predict_proba(torch.stack([transform(load_rgb(path)) for path in images]))
    for index, path in enumerate(images):
        printed = {row["class"]: float(row["probability"]) for row in rows if row["path"] == str(path)}
        assert printed == pytest.approx(dict(zip(CLASSES, expected[index].tolist(), strict=True)), abs=1e-5)
        assert sum(printed.values()) == pytest.approx(1.0, abs=1e-5)


def test_the_table_names_each_image_and_a_missing_file(run_dir: Path, photos: Path, capsys) -> None:
    good = photos / "astronaut" / "0.jpg"
    assert main(["predict", str(run_dir / "best.ckpt"), str(good), str(photos / "gone.png")]) == 1

    captured = capsys.readouterr()
    assert str(good) in captured.out
    assert "error: no such file" in captured.out
    assert "1 of 2 images could not be read" in captured.err


def test_a_folder_without_images_is_an_error(run_dir: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["predict", str(run_dir), str(tmp_path / "empty")]) == 2
    assert "no image files" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["table", "csv", "json"])
def test_class_names_never_reach_the_terminal_as_control_codes(run_dir: Path, tmp_path: Path, capsys, fmt: str) -> None:
    bundle = tmp_path / "bundle"
    assert main(["export", str(run_dir), "--format", "safetensors", "--out", str(bundle)]) == 0
    metadata = json.loads((bundle / "zoo.json").read_text(encoding="utf-8"))
    metadata["classes"] = ["evil\x1b[2J\x1b[31m", "[bold]markup[/bold]", "c1\x9b31m"]
    (bundle / "zoo.json").write_text(json.dumps(metadata), encoding="utf-8")
    photo = next((run_dir.parent / "images").rglob("*.jpg"))
    capsys.readouterr()
    assert main(["predict", str(bundle), str(photo), "--format", fmt, "--top-k", "3"]) == 0
    printed = capsys.readouterr().out
    assert "\x1b" not in printed, "no escape sequence reaches the terminal"
    assert "\x9b" not in printed, "no escape sequence reaches the terminal"
    assert ("\\x1b[2J" in printed or "\\u001b[2J" in printed)
    assert "[bold]markup[/bold]" in printed


def test_a_registry_name_predicts_imagenet_classes_with_its_installed_weights(tmp_path: Path, capsys) -> None:
    from PIL import Image
    from skimage import data

    cat = tmp_path / "chelsea.png"
    Image.fromarray(data.chelsea()).save(cat)
    # efficientnet_lite0's ImageNet weights ship in a pip package; the names are torchvision's ImageNet categories.
    assert main(["predict", "efficientnet_lite0", str(cat), "--format", "json", "--top-k", "3"]) == 0
    top = json.loads(capsys.readouterr().out)[0]["predictions"]
    assert top[0]["class"] in {"tabby", "tiger cat", "Egyptian cat"}
    assert top[0]["probability"] > 0.3
    assert main(["predict", "small_cnn", str(cat)]) == 2  # no pretrained weights: one line saying what to pass
    assert "small_cnn has no pretrained weights" in capsys.readouterr().err
