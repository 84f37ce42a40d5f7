"""``zoo evaluate`` on a real short run: metrics, confusion matrix, report, and the data it is given."""

from __future__ import annotations

import csv
import io
import json
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from PIL import Image

from finetune.data.split import class_counts, load_split
from finetune.results.evaluate import compute_metrics
from tests.helpers import make_image_folder
from zoo_cli.main import main

CLASSES = ["astronaut", "chelsea", "coffee"]


@pytest.fixture(scope="module")
def run_dir(small_run: Path) -> Path:
    return small_run


def _metrics(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Evaluated:
    out: Path
    metrics: dict
    summary: dict
    printed: str
    warned: str


@pytest.fixture(scope="module")
def evaluated_val(run_dir: Path) -> Evaluated:
    """``zoo evaluate RUN --split val``, once for the tests that read what it wrote and printed."""
    printed, warned = io.StringIO(), io.StringIO()
    with redirect_stdout(printed), redirect_stderr(warned):
        assert main(["evaluate", str(run_dir), "--split", "val"]) == 0
    out = run_dir / "eval-val"
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    return Evaluated(out, _metrics(out), summary, printed.getvalue(), warned.getvalue())


def test_a_run_folder_is_evaluated_on_its_validation_split(evaluated_val: Evaluated, run_dir: Path) -> None:
    metrics, summary = evaluated_val.metrics, evaluated_val.summary
    val = load_split(run_dir).val
    assert metrics["split"] == "val"
    assert metrics["num_images"] == len(val) == summary["num_val"]
    # The same model, images and preprocessing as the run's validation: the same figures.
    assert metrics["top1_error"] == pytest.approx(summary["val_top1_error"], abs=1e-3)
    assert metrics["top1_error_ci95"] == pytest.approx(summary["val_top1_error_ci95"], abs=1e-3)
    assert metrics["loss"] == pytest.approx(summary["val_loss"], abs=1e-4)
    assert metrics["k"] == 2
    assert metrics["topk_error"] <= metrics["top1_error"]


def test_the_calibration_error_is_the_runs_own(evaluated_val: Evaluated) -> None:
    # After the temperature, on the images the run fitted it on (evaluate runs in fp32, a run in its own precision).
    assert evaluated_val.metrics["temperature"] == evaluated_val.summary["temperature"]
    assert evaluated_val.metrics["ece"] == pytest.approx(evaluated_val.summary["val_ece_after"], abs=0.1)
    # And the floor a perfectly calibrated model would show on those images, the same draws over the same softmax.
    assert evaluated_val.metrics["ece_noise"] == pytest.approx(evaluated_val.summary["val_ece_noise"], abs=0.5)
    assert 0 < evaluated_val.metrics["ece_noise"] < 100
    assert f"scores {evaluated_val.metrics['ece_noise']:.2f} % on as many images" in (
        evaluated_val.out / "report.md").read_text(encoding="utf-8")


def test_the_confusion_matrix_agrees_with_the_per_class_figures(evaluated_val: Evaluated, run_dir: Path) -> None:
    metrics, val = evaluated_val.metrics, load_split(run_dir).val
    assert [row["class"] for row in metrics["per_class"]] == CLASSES
    assert [row["support"] for row in metrics["per_class"]] == list(class_counts(val, CLASSES).values())
    with (evaluated_val.out / "confusion_matrix.csv").open(encoding="utf-8") as file:
        header, *rows = list(csv.reader(file))
    assert header == ["true \\ predicted", *CLASSES]
    assert [row[0] for row in rows] == CLASSES
    matrix = [[int(value) for value in row[1:]] for row in rows]
    correct = sum(matrix[i][i] for i in range(3))
    assert sum(map(sum, matrix)) == len(val)
    assert 100 * (1 - correct / len(val)) == pytest.approx(metrics["top1_error"], abs=1e-3)
    for i, row in enumerate(metrics["per_class"]):
        assert row["recall"] == pytest.approx(matrix[i][i] / row["support"], abs=1e-4)


def test_the_figures_are_readable_pictures(evaluated_val: Evaluated) -> None:
    with Image.open(evaluated_val.out / "confusion_matrix.png") as image:
        assert image.format == "PNG"
        assert image.width >= 500
    with Image.open(evaluated_val.out / "calibration.png") as image:
        assert image.format == "PNG"
        assert image.height >= 500


def test_the_report_shows_every_class_and_says_validation_is_optimistic(evaluated_val: Evaluated) -> None:
    report = (evaluated_val.out / "report.md").read_text(encoding="utf-8")
    assert "top-2 error" in report
    assert all(f"| {name} |" in report for name in CLASSES)
    assert "confusion_matrix.png" in report
    assert "calibration.png" in report
    assert "95% Wilson interval" in report
    assert "chose the checkpoint" in report, "validation figures say they are optimistic"


def test_the_printed_table_shows_the_errors_and_the_warning(evaluated_val: Evaluated) -> None:
    assert "top-1 error" in evaluated_val.printed
    assert "top-2 error" in evaluated_val.printed
    assert all(n in evaluated_val.printed for n in CLASSES)
    assert "chose the checkpoint" in evaluated_val.warned


def test_a_run_folder_is_evaluated_on_its_test_split_by_default(run_dir: Path) -> None:
    assert main(["evaluate", str(run_dir)]) == 0
    metrics = _metrics(run_dir / "eval-test")
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    assert metrics["split"] == "test"
    assert metrics["num_images"] == summary["num_test"] == 3
    assert metrics["top1_error"] == pytest.approx(summary["test_top1_error"], abs=1e-3)
    assert metrics["top1_error_ci95"] == pytest.approx(summary["test_top1_error_ci95"], abs=1e-3)
    assert metrics["chance_top1_error"] == summary["chance_top1_error"]
    assert metrics["learned"] == summary["learned"]


def test_metrics_with_more_than_five_classes() -> None:
    classes = [f"class{i}" for i in range(6)]
    labels = torch.tensor([0, 1, 2, 3, 4, 5, 0, 1])
    predicted = torch.tensor([0, 1, 2, 3, 4, 0, 1, 1])
    logits = torch.zeros(8, 6)
    logits[torch.arange(8), predicted] = 10.0
    logits[5, 5] = -10.0  # the truth of image 5 ranks last: a top-5 miss
    logits[6, 0] = 5.0  # the truth of image 6 ranks second: a top-5 hit

    metrics, confusion = compute_metrics(logits, labels, classes)

    assert metrics["k"] == 5
    assert metrics["num_images"] == 8
    assert metrics["top1_error"] == pytest.approx(25.0)
    assert metrics["topk_error"] == pytest.approx(12.5)
    rows = {row["class"]: row for row in metrics["per_class"]}
    assert (rows["class0"]["precision"], rows["class0"]["recall"], rows["class0"]["support"]) == (0.5, 0.5, 2)
    assert rows["class1"]["precision"] == pytest.approx(2 / 3, abs=1e-4)
    assert rows["class1"]["recall"] == 1.0
    assert rows["class1"]["f1"] == pytest.approx(0.8, abs=1e-4)
    assert (rows["class5"]["precision"], rows["class5"]["recall"], rows["class5"]["support"]) == (0.0, 0.0, 1)
    assert confusion[5, 0] == 1
    assert confusion[0, 1] == 1
    assert confusion.sum() == 8


def test_unknown_class_folders_are_an_error(run_dir: Path, tmp_path: Path, capsys) -> None:
    data = make_image_folder(tmp_path / "data", per_class=1, classes=(*CLASSES, "dog", "zebra"))
    out = tmp_path / "eval"

    assert main(["evaluate", str(run_dir), "--data", str(data), "--out", str(out)]) == 2

    error = capsys.readouterr().err
    assert "unknown to the model" in error
    assert "dog, zebra" in error
    assert not out.exists()


def test_known_classes_missing_from_the_data_are_a_warning(run_dir: Path, tmp_path: Path, capsys) -> None:
    data = make_image_folder(tmp_path / "data", per_class=3, classes=("astronaut", "chelsea"))
    out = tmp_path / "eval"

    assert main(["evaluate", str(run_dir / "best.ckpt"), "--data", str(data), "--out", str(out)]) == 0

    assert "warning: no images of the known classes coffee" in capsys.readouterr().err
    metrics = _metrics(out)
    assert metrics["split"] == "all"
    assert metrics["num_images"] == 6
    assert [row["support"] for row in metrics["per_class"]] == [3, 3, 0]
    assert "coffee" in (out / "report.md").read_text(encoding="utf-8")


def test_a_split_data_folder_is_evaluated_by_part(run_dir: Path, tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    for part, per_class in (("train", 1), ("val", 2), ("test", 3)):
        make_image_folder(data / part, per_class=per_class)
    expected = {None: 6, "test": 9, "all": 18}
    for split, count in expected.items():
        out = tmp_path / f"eval-{split}"
        split_flag = ["--split", split] if split else []
        assert main(["evaluate", str(run_dir), "--data", str(data), "--out", str(out), *split_flag]) == 0
        assert _metrics(out)["num_images"] == count

    assert main(["evaluate", str(run_dir), "--data", str(data / "val"), "--split", "test"]) == 2
    assert "no test split: evaluate it whole with --split all" in capsys.readouterr().err


def test_a_checkpoint_alone_needs_data(run_dir: Path, capsys) -> None:
    assert main(["evaluate", str(run_dir / "best.ckpt")]) == 2
    assert "pass --data DIR" in capsys.readouterr().err


def test_the_reliability_diagram_keeps_a_long_title_inside_and_fades_bins_of_few_images() -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from finetune.results.calibration import FEW_IMAGES, reliability_figure

    # 40 images at confidence 0.95 (36 right), 2 at 0.55 (one right): a full bin and a near-empty one.
    probabilities = torch.tensor([[0.95, 0.05]] * 40 + [[0.55, 0.45]] * 2)
    labels = torch.tensor([0] * 36 + [1] * 4 + [0, 1])
    title = "resnet18 on a-rather-long-folder-name-of-holiday-photos (test split, 42 images), softmax temperature 1.23"
    figure = reliability_figure(probabilities, labels, title)
    canvas = FigureCanvasAgg(figure)
    figure.tight_layout()
    canvas.draw()
    extent = figure._suptitle.get_window_extent(canvas.get_renderer())  # type: ignore[union-attr]
    assert 0 <= extent.x0
    assert extent.x1 <= figure.bbox.x1
    assert extent.y1 <= figure.bbox.y1
    bars = [patch for patch in figure.axes[0].patches if patch.get_height() > 0]
    faded = [bar for bar in bars if bar.get_alpha() == 0.25]
    assert FEW_IMAGES > 2
    assert len(faded) == 1
    assert faded[0].get_x() < 0.55 < faded[0].get_x() + faded[0].get_width()
