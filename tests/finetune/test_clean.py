"""``zoo clean``: planted label errors and a copied image are found, and the data folder is left byte for byte."""

from __future__ import annotations

import csv
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from zoo_cli.main import main

PHOTOS = ("astronaut", "chelsea", "coffee")
# Files planted in the wrong class folder: (folder, file name, the photo it really shows).
PLANTED = (("chelsea", "wrong-0.png", "coffee"), ("chelsea", "wrong-1.png", "coffee"),
           ("coffee", "wrong-2.png", "astronaut"))


def _crop(photo: str, rng: np.random.Generator, size: int = 48) -> Image.Image:
    pixels = getattr(data, photo)()
    height, width = pixels.shape[:2]
    top, left = rng.integers(0, height // 2), rng.integers(0, width // 2)
    return Image.fromarray(pixels[top:top + height // 2, left:left + width // 2]).resize((size, size))


def _snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` (hidden ones too), with the SHA-256 of each file's bytes."""
    return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "folder"
            for path in sorted(root.rglob("*"))}


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as file:
        return list(csv.DictReader(file))


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("clean")
    images = root / "images"
    rng = np.random.default_rng(0)
    for part, count in (("train", 10), ("val", 3)):
        for photo in PHOTOS:
            (images / part / photo).mkdir(parents=True)
            for index in range(count):
                _crop(photo, rng).save(images / part / photo / f"{index}.png")
    for folder, name, photo in PLANTED:
        _crop(photo, rng).save(images / "train" / folder / name)
    shutil.copyfile(images / "train" / "astronaut" / "0.png", images / "val" / "astronaut" / "copy.png")
    before = _snapshot(images)
    out = root / "out"
    assert main(["clean", str(images), "--out", str(out), "--folds", "3"]) == 0
    assert _snapshot(images) == before, "zoo clean changed the data folder"
    return images, out, before


def test_planted_label_errors_top_the_list(planted: tuple[Path, Path, dict[str, str]]) -> None:
    images, out, _ = planted
    rows = _rows(out / "label_issues.csv")
    assert list(rows[0]) == ["path", "given_label", "suggested_label", "label_quality"]
    expected = {str(images / "train" / folder / name): (folder, photo) for folder, name, photo in PLANTED}
    top = {row["path"]: (row["given_label"], row["suggested_label"]) for row in rows[:len(PLANTED)]}
    assert top == expected
    qualities = [float(row["label_quality"]) for row in rows]
    assert qualities == sorted(qualities)
    assert qualities[len(PLANTED) - 1] < 0.5
    with Image.open(out / "label_issues.png") as picture:
        assert picture.format == "PNG"


def test_a_copy_across_the_split_is_a_near_duplicate(planted: tuple[Path, Path, dict[str, str]]) -> None:
    images, out, _ = planted
    rows = _rows(out / "near_duplicates.csv")
    assert list(rows[0]) == ["path_a", "path_b", "similarity", "split_a", "split_b"]
    pairs = {frozenset((row["path_a"], row["path_b"])): row for row in rows}
    original, copied = images / "train" / "astronaut" / "0.png", images / "val" / "astronaut" / "copy.png"
    copy = pairs[frozenset((str(original), str(copied)))]
    assert float(copy["similarity"]) == pytest.approx(1.0, abs=1e-5)
    assert {copy["split_a"], copy["split_b"]} == {"train", "val"}
    similarities = [float(row["similarity"]) for row in rows]
    assert similarities == sorted(similarities, reverse=True)
    assert min(similarities) >= 0.97


def test_the_data_folder_is_never_written(planted: tuple[Path, Path, dict[str, str]], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    images, _, before = planted
    inside = images / "train" / "report"
    assert main(["clean", str(images), "--out", str(inside)]) == 2
    error = capsys.readouterr().err.strip()
    assert "lies inside the data folder" in error
    assert "\n" not in error
    assert _snapshot(images) == before


@pytest.mark.parametrize(("extra", "message"), [
    (["--folds", "1"], "--folds must be at least 2"),
    (["--similarity", "1.5"], "--similarity must be a cosine similarity above 0 and at most 1"),
    (["--arch", "small_cnn"], "small_cnn has no pretrained weights: choose another --arch"),
    (["--arch", "resnet"], "unknown architecture 'resnet'"),
    (["--arch", "timm/vit_tiny_patch16_224", "--image-size", "128"],
     "takes images of 224 px only (its input size is fixed): leave out --image-size or pass 224 (got 128)"),
    (["--image-size", "16"], "efficientnet_lite0 needs images of at least 32 px: raise --image-size (got 16)"),
])
def test_bad_settings_are_one_line_errors(planted: tuple[Path, Path, dict[str, str]], tmp_path: Path,
                                          extra: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    images, _, _ = planted
    assert main(["clean", str(images), "--out", str(tmp_path / "out"), *extra]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error
    assert "\n" not in error


def test_a_class_of_one_image_and_a_file_as_out_are_one_line_errors(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(1)
    for photo, count in (("chelsea", 3), ("coffee", 1)):
        (tmp_path / "images" / photo).mkdir(parents=True)
        for index in range(count):
            _crop(photo, rng).save(tmp_path / "images" / photo / f"{index}.png")
    assert main(["clean", str(tmp_path / "images"), "--out", str(tmp_path / "out")]) == 2
    assert "class coffee has 1 image" in capsys.readouterr().err
    a_file = tmp_path / "images" / "chelsea" / "0.png"
    assert main(["clean", str(tmp_path / "images"), "--out", str(a_file)]) == 2
    assert "is a file" in capsys.readouterr().err
