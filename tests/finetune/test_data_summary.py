"""``zoo data DIR``: class counts, sizes, corrupt files, copies and the preview, with the folder left as it was."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from finetune.data.summary import plot_preview, size_bin
from finetune.data.transforms import train_transform
from tests.helpers import make_image_folder
from zoo.images import load_rgb
from zoo.spec import Preprocessing
from zoo_cli.main import main


def _state(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(path): (path.stat().st_size, path.stat().st_mtime_ns) for path in sorted(folder.rglob("*"))}


def test_zoo_data_summarises_a_folder_and_writes_only_the_preview(tmp_path: Path, capsys) -> None:
    folder = make_image_folder(tmp_path / "images", per_class=6)
    (folder / "coffee" / "broken.jpg").write_bytes(b"not a jpeg")
    shutil.copy(folder / "chelsea" / "0.jpg", folder / "astronaut" / "copy.jpg")  # one image under two classes
    Image.new("RGB", (300, 200)).save(folder / "coffee" / "large.png")
    before = _state(folder)

    out = tmp_path / "look"
    assert main(["data", str(folder), "--out", str(out), "--arch", "small_cnn", "--augment", "standard"]) == 0
    printed = capsys.readouterr().out
    assert _state(folder) == before  # nothing in the folder written, moved or changed
    assert "corrupt or unreadable: 1" in printed
    assert "broken.jpg" in printed
    assert "byte-identical copies: 1 in 1 groups" in printed
    assert "copy.jpg" in printed
    assert "32–63 px" in printed
    assert "128–223 px" in printed
    counts = {line.split("│")[1].strip(): [int(cell) for cell in line.split("│")[2:5]]
              for line in printed.splitlines() if line.startswith("│ ") and line.split("│")[2].strip().isdigit()
              and line.split("│")[1].strip() in ("astronaut", "chelsea", "coffee")}
    assert {name: sum(values) for name, values in counts.items()} == {"astronaut": 7, "chelsea": 6, "coffee": 7}
    with Image.open(out / "preview.png") as preview:
        assert preview.width > 400
        assert preview.height > 400
    assert "augmentation standard" in printed

    # the same as an explicit action; an --out inside the data folder is refused before any work
    assert main(["data", "summary", str(folder), "--out", str(tmp_path / "again"), "--arch", "small_cnn"]) == 0
    assert (tmp_path / "again" / "preview.png").is_file()
    capsys.readouterr()
    assert main(["data", str(folder), "--out", str(folder / "inside")]) == 2
    assert "lies inside the data folder" in capsys.readouterr().err
    assert _state(folder) == before


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
