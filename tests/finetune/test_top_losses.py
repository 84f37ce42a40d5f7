"""Top losses in ``zoo evaluate``: every image ranked by its loss, the worst ones in a picture."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from PIL import Image

from zoo_cli.main import main


@pytest.fixture(scope="module")
def evaluated(small_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("top-losses") / "eval-all"
    assert main(["evaluate", str(small_run), "--split", "all", "--top-losses", "6", "--out", str(out)]) == 0
    return out


def test_every_image_is_ranked_by_its_loss(evaluated: Path) -> None:
    with (evaluated / "top_losses.csv").open(encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    metrics = json.loads((evaluated / "metrics.json").read_text(encoding="utf-8"))
    assert list(rows[0]) == ["path", "label", "predicted", "probability", "loss"]
    assert len(rows) == metrics["num_images"] == 24
    assert len({row["path"] for row in rows}) == 24
    losses = [float(row["loss"]) for row in rows]
    assert losses == sorted(losses, reverse=True)
    assert min(losses) >= 0
    assert sum(losses) / len(losses) == pytest.approx(metrics["loss"], abs=1e-4)  # the images' share of the loss
    classes = {"astronaut", "chelsea", "coffee"}
    for row in rows:
        assert row["label"] in classes
        assert row["predicted"] in classes
        assert Path(row["path"]).is_file()
        assert 1 / 3 <= float(row["probability"]) <= 1  # the predicted class's: the largest of three
        if row["label"] == row["predicted"]:  # a right answer's loss is -log of its (uncalibrated) probability
            assert float(row["loss"]) <= math.log(3) + 1e-6
    wrong = sum(row["label"] != row["predicted"] for row in rows)
    assert wrong == round(metrics["top1_error"] * 24 / 100)


def test_the_worst_images_are_shown_and_reported(evaluated: Path) -> None:
    with Image.open(evaluated / "top_losses.png") as picture:
        assert picture.format == "PNG"
        assert picture.height > picture.width / 2
    assert "![top losses](top_losses.png)" in (evaluated / "report.md").read_text(encoding="utf-8")


def test_no_top_losses_is_a_one_line_error(small_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", str(small_run), "--top-losses", "0"]) == 2
    error = capsys.readouterr().err.strip()
    assert "--top-losses must be at least 1" in error
    assert "\n" not in error
