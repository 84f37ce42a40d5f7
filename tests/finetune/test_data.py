"""The data layer on tiny real image folders: scanning, odd image modes, broken files, splits, digits."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata
from sklearn.datasets import load_digits

from finetune.data import builtin
from finetune.data.builtin import BUILTIN_DATASETS, resolve_data
from finetune.data.images import ImageDataset
from finetune.data.scan import IMAGE_SUFFIXES, DataError, Sample, SkippedFile, scan_folder
from finetune.data.split import Split, class_counts, imbalance_ratio, load_split, save_split, split_folder
from tests.helpers import per_test_environment
from zoo.errors import ZooError
from zoo.images import load_rgb

PHOTOS = [skdata.astronaut(), skdata.chelsea(), skdata.coffee()]
FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".gif": "GIF", ".bmp": "BMP", ".webp": "WEBP",
           ".tif": "TIFF", ".tiff": "TIFF"}


def photo(index: int, size: int = 16) -> Image.Image:
    """A small crop of a real photo, different for each index."""
    source = PHOTOS[index % len(PHOTOS)]
    top, left = (index * 37) % 200, (index * 53) % 200
    return Image.fromarray(source[top : top + 96, left : left + 96]).resize((size, size))


def write_image(path: Path, index: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    photo(index).save(path, FORMATS[path.suffix.lower()])
    return path


def make_folder(root: Path, counts: dict[str, int]) -> Path:
    """``root/<class>/<i>.png`` with ``counts[class]`` photos each."""
    index = 0
    for name, count in counts.items():
        for i in range(count):
            write_image(root / name / f"{i:03d}.png", index)
            index += 1
    return root


def test_suffixes_cover_the_common_formats() -> None:
    assert IMAGE_SUFFIXES == set(FORMATS)


def test_scan_finds_every_suffix_at_any_depth_and_ignores_hidden(tmp_path: Path) -> None:
    cat, dog = tmp_path / "고양이", tmp_path / "big dog"
    # Each suffix in mixed case, one level deeper each time.
    mixed = [suffix.upper() if i % 2 else suffix.capitalize() for i, suffix in enumerate(sorted(FORMATS))]
    expected_cat = [
        write_image(cat.joinpath(*["deeper"] * i, f"image {i}{suffix}"), i) for i, suffix in enumerate(mixed)
    ]
    expected_dog = [write_image(dog / "a.jpg", 10), write_image(dog / "sub" / "b.png", 11)]
    write_image(cat / ".hidden.png")
    write_image(cat / ".thumbnails" / "c.png")
    write_image(tmp_path / ".cache" / "d.png")  # a hidden folder is not a class
    (dog / "notes.txt").write_text("not an image")
    (dog / "labels.csv").write_text("a,b\n")
    loose = write_image(tmp_path / "loose.png")

    result = scan_folder(tmp_path)

    assert result.classes == ["big dog", "고양이"]
    assert result.samples == sorted(
        [Sample(path, 0) for path in expected_dog] + [Sample(path, 1) for path in expected_cat],
        key=lambda sample: (sample.label, sample.path),
    )
    assert result.skipped == [SkippedFile(loose, "not in a class folder")]


def test_scan_labels_follow_given_classes(tmp_path: Path) -> None:
    make_folder(tmp_path, {"b": 1, "c": 1})
    result = scan_folder(tmp_path, classes=["a", "b", "c"])
    assert result.classes == ["a", "b", "c"]
    assert [sample.label for sample in result.samples] == [1, 2]
    with pytest.raises(DataError, match="class folder 'c' .* not one of the training classes"):
        scan_folder(tmp_path, classes=["a", "b"])


def test_scan_skips_broken_files_with_reasons(tmp_path: Path) -> None:
    make_folder(tmp_path, {"a": 2, "b": 1})
    good = tmp_path / "a" / "good.jpg"
    write_image(good)
    whole = good.read_bytes()
    broken = {
        "truncated.jpg": "truncated image",
        "empty.png": "empty file",
        "text.jpg": "not an image: cannot identify",
        "dangling.png": "broken link",
    }
    (tmp_path / "a" / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "a" / "empty.png").touch()
    (tmp_path / "a" / "text.jpg").write_text("this is not a JPEG")
    (tmp_path / "a" / "dangling.png").symlink_to(tmp_path / "gone.png")

    result = scan_folder(tmp_path)

    assert {file.path.name: file.reason for file in result.skipped} == broken
    assert [(sample.path.name, sample.label) for sample in result.samples] == [
        ("000.png", 0), ("001.png", 0), ("good.jpg", 0), ("000.png", 1)
    ]


def test_scan_lists_special_files_and_unreadable_folders_instead_of_blocking_or_dropping_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_folder(tmp_path, {"a": 2, "b": 2})
    os.mkfifo(tmp_path / "a" / "pipe.png")  # opening it would wait forever for a writer
    locked = tmp_path / "b" / "locked"
    locked.mkdir()
    write_image(locked / "hidden-from-us.png")
    real_scandir = os.scandir

    def scandir(path):  # as chmod 000 does for a user who is not root
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    result = scan_folder(tmp_path)
    assert {file.path: file.reason for file in result.skipped} == {
        tmp_path / "a" / "pipe.png": "not a regular file",
        locked: "folder not readable: Permission denied",
    }
    assert len(result.samples) == 4


def test_load_rgb_modes(tmp_path: Path) -> None:
    gray = Image.new("L", (2, 1), 100)
    rgba = Image.new("RGBA", (2, 1), (255, 0, 0, 0))  # transparent pixels whose colour must not show
    rgba.putpixel((1, 0), (0, 0, 255, 255))
    half = Image.new("LA", (2, 1), (0, 128))
    palette = Image.new("P", (2, 1), 0)
    palette.putpalette([255, 0, 0, 0, 0, 0] + [0] * 762)
    palette.putpixel((1, 0), 1)
    palette.info["transparency"] = 1
    cmyk = Image.new("CMYK", (2, 1), (0, 255, 255, 0))
    sixteen = Image.fromarray(np.array([[65535, 25700]], dtype=np.uint16))
    thirty_two = Image.new("I", (2, 1), 65535)
    thirty_two.putpixel((1, 0), 257)
    cases = [
        (gray, "gray.png", [(100, 100, 100)] * 2),
        (rgba, "rgba.png", [(255, 255, 255), (0, 0, 255)]),
        (half, "la.png", [(127, 127, 127)] * 2),
        (palette, "palette.png", [(255, 0, 0), (255, 255, 255)]),
        (palette, "palette.gif", [(255, 0, 0), (255, 255, 255)]),
        (cmyk, "cmyk.tif", [(255, 0, 0)] * 2),
        (sixteen, "sixteen.png", [(255, 255, 255), (100, 100, 100)]),  # clipping would give 255 for both
        (thirty_two, "thirty_two.tif", [(255, 255, 255), (1, 1, 1)]),
    ]
    for image, name, expected in cases:
        image.save(tmp_path / name)
        assert Image.open(tmp_path / name).mode == image.mode, name  # the file really has that mode
        loaded = load_rgb(tmp_path / name)
        assert loaded.mode == "RGB", name
        assert [loaded.getpixel((x, 0)) for x in range(2)] == expected, name


def test_image_dataset_returns_transformed_image_and_label(tmp_path: Path) -> None:
    samples = [Sample(write_image(tmp_path / "x.png"), 3), Sample(write_image(tmp_path / "y.png", 1), 1)]
    plain = ImageDataset(samples)
    image, label = plain[0]
    assert len(plain) == 2
    assert label == 3
    assert image.mode == "RGB"
    assert image.size == (16, 16)
    sized = ImageDataset(samples, transform=lambda image: image.size)
    assert sized[1] == ((16, 16), 1)


def _error(root: Path) -> str:
    with pytest.raises(DataError) as caught:
        scan_folder(root)
    assert isinstance(caught.value, ZooError)
    assert caught.value.exit_code == 2
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_scan_errors_are_one_line_naming_the_folder(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    assert str(missing) in _error(missing)
    assert "does not exist" in _error(missing)
    (tmp_path / "file.png").touch()
    assert "is not a folder" in _error(tmp_path / "file.png")

    flat = tmp_path / "flat"
    write_image(flat / "a.png")
    assert f"no class sub-folders in {flat}" in _error(flat)

    one = make_folder(tmp_path / "one", {"only": 2})
    assert f"only 1 class folder in {one}" in _error(one)

    empty = make_folder(tmp_path / "empty", {"a": 1, "b": 0, "c": 1})
    (empty / "b").mkdir()
    (empty / "b" / "broken.jpg").write_text("not an image")
    (empty / "b" / "empty.png").touch()
    assert f"class folder {empty / 'b'} has no usable image (2 skipped)" in _error(empty)


@pytest.fixture(scope="module")
def stratified(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Split]:
    """A folder of 4 classes of 20, 5, 2 and 1 images, and its split with seed 0 (20% val, 15% test)."""
    root = make_folder(tmp_path_factory.mktemp("stratified"), {"many": 20, "few": 5, "two": 2, "single": 1})
    with per_test_environment(tmp_path_factory):
        return root, split_folder(root, val_fraction=0.2, test_fraction=0.15, seed=0)


def test_a_split_names_the_classes_in_order_and_skips_nothing(stratified: tuple[Path, Split]) -> None:
    _, split = stratified
    assert split.classes == ["few", "many", "single", "two"]
    assert split.skipped == []


def test_each_class_is_split_in_proportion_and_short_classes_keep_one_for_training(
        stratified: tuple[Path, Split]) -> None:
    _, split = stratified
    # 20 images: 3 test (15%), 4 val (20%); short classes keep one for training and serve validation first.
    assert class_counts(split.train, split.classes) == {"few": 3, "many": 13, "single": 1, "two": 1}
    assert class_counts(split.val, split.classes) == {"few": 1, "many": 4, "single": 0, "two": 1}
    assert class_counts(split.test, split.classes) == {"few": 1, "many": 3, "single": 0, "two": 0}


def test_train_val_and_test_are_disjoint_and_hold_every_image(stratified: tuple[Path, Split]) -> None:
    root, split = stratified
    everything = scan_folder(root).samples
    assert sorted(split.train + split.val + split.test, key=lambda s: (s.label, s.path)) == everything
    assert not set(split.train) & set(split.val)
    assert not set(split.train) & set(split.test)
    assert not set(split.val) & set(split.test)


def test_the_same_seed_gives_the_same_split(stratified: tuple[Path, Split]) -> None:
    root, split = stratified
    assert split_folder(root, val_fraction=0.2, test_fraction=0.15, seed=0) == split


def test_another_seed_picks_other_images_in_the_same_proportions(stratified: tuple[Path, Split]) -> None:
    root, split = stratified
    other = split_folder(root, val_fraction=0.2, test_fraction=0.15, seed=1)
    assert other.val != split.val
    assert other.test != split.test
    assert class_counts(other.test, other.classes) == class_counts(split.test, split.classes)


def test_the_test_images_are_cut_first_whatever_the_validation_share(stratified: tuple[Path, Split]) -> None:
    root, split = stratified
    # The test images are cut first: another validation share leaves them where they were.
    assert split_folder(root, val_fraction=0.3, test_fraction=0.15, seed=0).test == split.test


def test_without_a_test_share_validation_is_as_it_was(stratified: tuple[Path, Split]) -> None:
    root, split = stratified
    no_test = split_folder(root, val_fraction=0.2, test_fraction=0.0, seed=0)
    assert no_test.test == []
    assert class_counts(no_test.val, split.classes) == class_counts(split.val, split.classes)


def test_train_and_val_folders_without_test_give_up_training_images_for_it(tmp_path: Path) -> None:
    make_folder(tmp_path / "train", {"a": 10, "b": 10})
    make_folder(tmp_path / "val", {"a": 2, "b": 2})
    split = split_folder(tmp_path, test_fraction=0.2)
    assert class_counts(split.test, split.classes) == {"a": 2, "b": 2}
    assert all(sample.path.parts[-3] == "train" for sample in split.test + split.train)
    assert len(split.train) == 16
    assert len(split.val) == 4
    assert not set(split.train) & set(split.test)


def test_split_honours_train_val_test_folders(tmp_path: Path) -> None:
    make_folder(tmp_path / "train", {"a": 3, "b": 3})
    make_folder(tmp_path / "val", {"a": 1, "b": 2})
    make_folder(tmp_path / "test", {"b": 1})
    (tmp_path / "val" / "a" / "broken.png").write_text("x")
    split = split_folder(tmp_path)
    assert split.classes == ["a", "b"]
    for part, counts in [("train", {"a": 3, "b": 3}), ("val", {"a": 1, "b": 2}), ("test", {"a": 0, "b": 1})]:
        samples = getattr(split, part)
        assert class_counts(samples, split.classes) == counts
        assert all(sample.path.parts[-3] == part for sample in samples)
    assert split.skipped == [SkippedFile(tmp_path / "val" / "a" / "broken.png", "not an image: cannot identify")]

    make_folder(tmp_path / "val", {"c": 1})
    with pytest.raises(DataError, match="class folder 'c' in .*val is not one of the training classes"):
        split_folder(tmp_path)


def test_split_rejects_a_bad_fraction(tmp_path: Path) -> None:
    folder = make_folder(tmp_path, {"a": 2, "b": 2})
    with pytest.raises(DataError, match="not between 0 and 1"):
        split_folder(folder, val_fraction=1.0)
    with pytest.raises(DataError, match="leaves no training images"):
        split_folder(folder, val_fraction=0.5, test_fraction=0.5)


def test_save_and_load_split_round_trip(tmp_path: Path) -> None:
    data = make_folder(tmp_path / "data", {"고양이": 5, "big dog": 3})
    (data / "big dog" / "broken, really.jpg").write_text("x")  # a comma in a path survives the CSV
    split = split_folder(data, seed=3)
    saved = tmp_path / "run" / "split"
    save_split(split, saved)

    assert load_split(saved) == split
    assert json.loads((saved / "classes.json").read_text(encoding="utf-8")) == ["big dog", "고양이"]
    assert "고양이" in (saved / "classes.json").read_text(encoding="utf-8")  # not \\u escapes
    with (saved / "train.csv").open(encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    assert list(rows[0]) == ["path", "label", "class"]
    assert all(Path(row["path"]).is_absolute() and row["class"] == split.classes[int(row["label"])] for row in rows)
    with (saved / "test.csv").open(encoding="utf-8") as file:
        assert [row["class"] for row in csv.DictReader(file)] == ["big dog", "고양이"]

    no_skips = tmp_path / "clean"
    save_split(split_folder(make_folder(tmp_path / "ok", {"a": 2, "b": 2}), test_fraction=0), no_skips)
    assert (no_skips / "test.csv").read_text().splitlines() == ["path,label,class"]
    assert (no_skips / "skipped.csv").read_text().splitlines() == ["path,reason"]

    split.val[0].path.unlink()
    split.train[0].path.unlink()
    with pytest.raises(DataError, match=f"2 image files listed in {saved} no longer exist") as caught:
        load_split(saved)
    assert "\n" not in str(caught.value)


def test_class_counts_and_imbalance() -> None:
    samples = [Sample(Path(f"{i}.png"), label) for i, label in enumerate([0, 0, 0, 0, 1, 2, 2])]
    counts = class_counts(samples, ["a", "b", "c", "d"])
    assert counts == {"a": 4, "b": 1, "c": 2, "d": 0}
    assert imbalance_ratio({"a": 4, "b": 1, "c": 2}) == 4.0
    assert imbalance_ratio({"a": 3, "b": 3}) == 1.0
    assert imbalance_ratio(counts) == float("inf")


def test_digits_materialises_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert BUILTIN_DATASETS == ("digits",)
    folder = resolve_data("digits", cache_dir=tmp_path)
    assert folder == tmp_path / "datasets" / "digits"
    pngs = sorted(folder.rglob("*.png"))
    assert len(pngs) == 1797
    assert sorted(path.name for path in folder.iterdir() if path.is_dir()) == [str(digit) for digit in range(10)]
    assert [path.name for path in folder.parent.iterdir()] == ["digits"]  # no staging folder left
    image = load_rgb(folder / "0" / "0.png")
    assert image.size == (8, 8)
    assert image.mode == "RGB"
    digits = load_digits()
    assert np.array_equal(np.asarray(image)[..., 0], np.rint(digits.images[0] * 255 / 16))  # 0..16 to 0..255
    brightest = int(np.argmax(digits.images.max(axis=(1, 2))))  # an image with the full value 16
    assert np.asarray(load_rgb(folder / str(digits.target[brightest]) / f"{brightest}.png")).max() == 255

    scan = scan_folder(folder)
    assert scan.classes == [str(digit) for digit in range(10)]
    assert len(scan.samples) == 1797
    assert not scan.skipped

    def fail(folder: Path) -> None:
        raise AssertionError("digits written twice")

    monkeypatch.setitem(builtin._WRITERS, "digits", fail)
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path))
    assert resolve_data("digits") == folder


def test_resolve_data_prefers_real_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    os.mkdir("digits")  # a user's own folder called digits wins over the built-in
    assert resolve_data("digits", cache_dir=tmp_path / "cache") == Path("digits")
    assert not (tmp_path / "cache").exists()
    assert resolve_data("my images") == Path("my images")
