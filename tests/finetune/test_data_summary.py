"""``zoo data DIR``: class counts, sizes, corrupt files, copies and the preview, with the folder left as it was."""

from __future__ import annotations

import io
import shutil
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from finetune.data.summary import plot_preview, size_bin
from finetune.data.transforms import train_transform
from tests.helpers import CommandRun, make_image_folder, per_test_environment, run_command
from zoo.images import load_rgb
from zoo.spec import Preprocessing
from zoo_cli.main import main


def _state(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(path): (path.stat().st_size, path.stat().st_mtime_ns) for path in sorted(folder.rglob("*"))}


@dataclass(frozen=True)
class Summarised:
    """A folder ``zoo data`` looked at three times, and what it printed and left."""

    folder: Path
    before: dict[str, tuple[int, int]]  # the folder's files before any command
    after_summary: dict[str, tuple[int, int]]  # ... after the first
    after_all: dict[str, tuple[int, int]]  # ... after all three
    summary: CommandRun  # zoo data DIR --out look
    again: CommandRun  # zoo data summary DIR --out again
    refused_status: int  # zoo data DIR --out DIR/inside's exit status
    refused: str  # ... and what it said


@pytest.fixture(scope="module")
def summarised(tmp_path_factory: pytest.TempPathFactory) -> Summarised:
    """``zoo data`` on 3 classes × 6 photos with a broken file, a copy under another class and a large image; then
    the same as an explicit action, then with an --out inside the data folder."""
    root = tmp_path_factory.mktemp("data-summary")
    with per_test_environment(tmp_path_factory):
        folder = make_image_folder(root / "images", per_class=6)
        (folder / "coffee" / "broken.jpg").write_bytes(b"not a jpeg")
        shutil.copy(folder / "chelsea" / "0.jpg", folder / "astronaut" / "copy.jpg")  # one image under two classes
        Image.new("RGB", (300, 200)).save(folder / "coffee" / "large.png")
        before = _state(folder)
        summary = run_command(["data", str(folder), "--out", str(root / "look"), "--arch", "small_cnn", "--augment",
                               "standard"], root / "look")
        after_summary = _state(folder)
        again = run_command(["data", "summary", str(folder), "--out", str(root / "again"), "--arch", "small_cnn"],
                            root / "again")
        refused = io.StringIO()
        with redirect_stdout(io.StringIO()), redirect_stderr(refused):
            refused_status = main(["data", str(folder), "--out", str(folder / "inside")])
        return Summarised(folder, before, after_summary, _state(folder), summary, again, refused_status,
                          refused.getvalue())


def test_zoo_data_leaves_the_folder_as_it_was(summarised: Summarised) -> None:
    assert summarised.after_summary == summarised.before  # nothing in the folder written, moved or changed
    assert summarised.after_all == summarised.before


def test_corrupt_files_and_copies_are_counted_and_named(summarised: Summarised) -> None:
    printed = summarised.summary.printed
    assert "corrupt or unreadable: 1" in printed
    assert "broken.jpg" in printed
    assert "byte-identical copies: 1 in 1 groups" in printed
    assert "copy.jpg" in printed


def test_image_sizes_are_counted_in_bins(summarised: Summarised) -> None:
    assert "32–63 px" in summarised.summary.printed
    assert "128–223 px" in summarised.summary.printed


def test_each_class_is_counted_with_its_readable_images(summarised: Summarised) -> None:
    printed = summarised.summary.printed
    counts = {line.split("│")[1].strip(): [int(cell) for cell in line.split("│")[2:5]]
              for line in printed.splitlines() if line.startswith("│ ") and line.split("│")[2].strip().isdigit()
              and line.split("│")[1].strip() in ("astronaut", "chelsea", "coffee")}
    assert {name: sum(values) for name, values in counts.items()} == {"astronaut": 7, "chelsea": 6, "coffee": 7}


def test_the_preview_is_written_and_shows_the_augmentation(summarised: Summarised) -> None:
    with Image.open(summarised.summary.out / "preview.png") as preview:
        assert preview.width > 400
        assert preview.height > 400
    assert "augmentation standard" in summarised.summary.printed


def test_zoo_data_summary_is_the_same_as_zoo_data(summarised: Summarised) -> None:
    assert (summarised.again.out / "preview.png").is_file()


def test_an_out_folder_inside_the_data_folder_is_refused(summarised: Summarised) -> None:
    assert summarised.refused_status == 2
    assert "lies inside the data folder" in summarised.refused


def test_the_preview_shows_what_the_training_transform_gives(tmp_path: Path) -> None:
    folder = make_image_folder(tmp_path / "images", per_class=1, classes=("chelsea",))
    sample_path = next(folder.rglob("*.jpg"))
    preprocessing = Preprocessing(resize=36, crop=32, interpolation="bilinear", mean=(0.5, 0.5, 0.5),
                                  std=(0.25, 0.25, 0.25))
    from finetune.data.scan import Sample

    plot_preview([Sample(sample_path, 0)], ["chelsea"], preprocessing, "none", tmp_path / "p.png", "t")
    expected = train_transform(preprocessing, "none")(load_rgb(sample_path)) * 0.25 + 0.5
    assert torch.all((expected >= 0) & (expected <= 1))  # undone normalisation gives displayable pixels
    with Image.open(tmp_path / "p.png") as image:
        assert np.asarray(image.convert("RGB")).std() > 10  # the image is drawn, not a blank tile
    assert [size_bin(40, 40), size_bin(300, 200), size_bin(4000, 3000)] == ["32–63 px", "128–223 px", "≥ 2048 px"]
