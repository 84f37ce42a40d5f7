"""summary.json as a typed record: what a run writes reads back identical, field for field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune.results.records import RunSummary
from zoo.errors import ZooError


@pytest.fixture(scope="module")
def run_dir(small_run: Path) -> Path:
    return small_run


def test_a_summary_reads_back_as_it_was_written(run_dir: Path, tmp_path: Path) -> None:
    summary = RunSummary.read(run_dir)
    assert summary.to_dict() == json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    assert summary.error(summary.reported_on) == summary.test_top1_error
    assert summary.config.model.arch == "small_cnn"
    summary.write(tmp_path)
    assert RunSummary.read(tmp_path) == summary


@pytest.mark.parametrize(("change", "message"), [
    ({"num_test": 3.5}, "num_test must be a whole number, got 3.5"),
    ({"k": "2"}, "k must be a whole number or null"),
    ({"reported_on": "train"}, "reported_on must be test or val"),
    ({"classes": ["a", 2]}, "classes must be a list of text"),
    ({"phase_seconds": {"scan": "fast"}}, "phase_seconds must be a mapping to a number"),
])
def test_a_field_of_the_wrong_type_is_named(run_dir: Path, tmp_path: Path, change: dict, message: str) -> None:
    content = {**json.loads((run_dir / "summary.json").read_text(encoding="utf-8")), **change}
    (tmp_path / "summary.json").write_text(json.dumps(content), encoding="utf-8")
    with pytest.raises(ZooError) as error:
        RunSummary.read(tmp_path)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_the_learning_curves_mark_the_epoch_whose_checkpoint_was_kept() -> None:
    from finetune.results.plots import learning_curves_figure

    rows = [{"epoch": e, "train/loss": 1 / e, "val/loss": 1 / e, "val/top1_error": abs(e - 3) + 1.0}
            for e in range(1, 6)]
    figure = learning_curves_figure(rows, "small_cnn on digits", chosen_epoch=3)
    for axis in figure.axes:
        marks = [line for line in axis.get_lines() if line.get_label() == "chosen: epoch 3"]
        assert len(marks) == 1
        assert list(marks[0].get_xdata()) == [3, 3]
        assert "chosen: epoch 3" in [text.get_text() for text in axis.get_legend().get_texts()]
    star = [line for line in figure.axes[1].get_lines() if line.get_marker() == "*"]
    assert [(list(line.get_xdata()), list(line.get_ydata())) for line in star] == [([3], [1.0])]
    assert not any("chosen" in line.get_label() for axis in learning_curves_figure(rows, "t").axes
                   for line in axis.get_lines())
