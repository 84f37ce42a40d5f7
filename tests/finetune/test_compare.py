"""`zoo compare` and `zoo report` end to end: small_cnn and resnet18 fine-tuned alike, alexnet failing."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from finetune.compare import load_comparison
from finetune.compare_plots import pareto_front
from finetune.config import ConfigError, load_config
from finetune.report import RESULT_COLUMNS, findings
from tests.conftest import make_image_folder
from zoo_cli.main import main

ARCHS = ["small_cnn", "alexnet", "resnet18"]  # alexnet needs 63 px: at 32 px it fails between the other two
# --weights none and an image folder: nothing reads or writes a weights or dataset cache.
QUICK = ["--image-size", "32", "--epochs", "1", "--max-steps", "2", "--weights", "none", "--batch-size", "8",
         "--augment", "none"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SPEC_COLUMNS = (
    "name", "depth", "params", "gflops", "ilsvrc_year", "ilsvrc_top5_error", "imagenet_top1_error",
    "imagenet_top5_error", "top1_error", "top5_error", "top5_k", "train_seconds", "train_images_per_second",
    "predict_ms_per_image", "status", "reason",
)


@dataclass(frozen=True)
class Outcome:
    code: int
    printed: str  # stdout and stderr together


@dataclass(frozen=True)
class Comparison:
    out: Path
    images: Path
    first: Outcome


def zoo(argv: Sequence[str]) -> Outcome:
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
        code = main(list(argv))
    return Outcome(code, buffer.getvalue())


@pytest.fixture(scope="module")
def comparison(tmp_path_factory: pytest.TempPathFactory) -> Comparison:
    """One real comparison, shared by the tests (each run trains for 2 steps on 32 px images)."""
    root = tmp_path_factory.mktemp("compare")
    images = make_image_folder(root / "images")
    out = root / "comparison"
    first = zoo(["compare", "--archs", ",".join(ARCHS), "--data", str(images), "--out", str(out), *QUICK])
    return Comparison(out, images, first)


def results(out: Path) -> dict[str, dict]:
    rows = json.loads((out / "results.json").read_text(encoding="utf-8"))
    return {row["name"]: row for row in rows}


def test_every_architecture_has_a_row_with_numbers(comparison: Comparison) -> None:
    rows = results(comparison.out)
    assert list(rows) == ARCHS
    for name in ("small_cnn", "resnet18"):
        row = rows[name]
        assert row["status"] == "ok" and row["reason"] is None
        assert 0 <= row["top1_error"] <= 100 and row["top5_error"] == 0.0 and row["top5_k"] == 3  # 3 classes
        assert row["train_seconds"] > 0 and row["train_images_per_second"] > 0
        assert row["predict_ms_per_image"] > 0 and row["predict_images_per_second"] > 0
        assert row["predict_batch_size"] == 8
    assert (rows["small_cnn"]["depth"], rows["resnet18"]["depth"]) == (5, 18)
    assert rows["resnet18"]["params"] == 11_689_512 and rows["resnet18"]["ilsvrc_year"] == 2015
    assert rows["resnet18"]["imagenet_top1_error"] is None  # trained from random weights: no ImageNet figure
    with (comparison.out / "results.csv").open(encoding="utf-8") as file:
        table = list(csv.DictReader(file))
    assert tuple(table[0]) == RESULT_COLUMNS and set(SPEC_COLUMNS) <= set(RESULT_COLUMNS)
    assert [row["name"] for row in table] == ARCHS and float(table[0]["top1_error"]) == rows["small_cnn"]["top1_error"]


def test_a_failing_architecture_is_recorded_and_the_others_finish(comparison: Comparison) -> None:
    assert comparison.first.code == 1
    failed = results(comparison.out)["alexnet"]
    assert failed["status"] == "failed" and "at least 63 px" in failed["reason"] and "\n" not in failed["reason"]
    assert failed["top1_error"] is None and failed["depth"] == 8
    assert "alexnet failed: alexnet needs images of at least 63 px" in comparison.first.printed
    assert (comparison.out / "runs" / "resnet18" / "summary.json").is_file()  # trained after the failure


def test_runs_are_ordinary_run_folders_on_one_shared_split(comparison: Comparison) -> None:
    runs = comparison.out / "runs"
    for name in ("small_cnn", "resnet18"):
        for part in ("classes.json", "train.csv", "val.csv"):
            assert (runs / name / part).read_bytes() == (comparison.out / "split" / part).read_bytes()
        assert {"best.ckpt", "last.ckpt", "config.yaml", "summary.json"} <= {p.name for p in (runs / name).iterdir()}
        assert load_config(runs / name / "config.yaml").model.arch == name
    small, resnet = (load_config(runs / name / "config.yaml") for name in ("small_cnn", "resnet18"))
    assert (small.data, small.optim, small.trainer) == (resnet.data, resnet.optim, resnet.trainer)


def test_outputs_plots_report_and_printed_table(comparison: Comparison) -> None:
    for plot in ("depth_vs_error.png", "error_vs_cost.png"):
        data = (comparison.out / plot).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000
    report = (comparison.out / "report.md").read_text(encoding="utf-8")
    assert report.startswith("# images: 1 epoch, at most 2 steps, 32 px, weights none, seed 0")
    assert "Best: " in report and "within 1 point" in report and "alexnet failed: " in report
    assert "| small_cnn | 5 |" in report and "| resnet18 | 18 |" in report
    assert "![depth vs error](depth_vs_error.png)" in report and "![error vs cost](error_vs_cost.png)" in report
    assert "top-1 err %" in comparison.first.printed and f"comparison folder: {comparison.out}" in comparison.first.printed


def test_running_again_skips_finished_architectures(comparison: Comparison) -> None:
    runs = comparison.out / "runs"
    before = {name: (runs / name / "summary.json").stat().st_mtime_ns for name in ("small_cnn", "resnet18")}
    again = zoo(["compare", "--out", str(comparison.out)])  # the folder's saved settings and architectures
    assert again.code == 1  # alexnet is retried and fails again
    for name in ("small_cnn", "resnet18"):
        assert f"{name}: skipped, already finished in {runs / name}" in again.printed
        assert (runs / name / "summary.json").stat().st_mtime_ns == before[name]
    assert list(results(comparison.out)) == ARCHS


def test_continuing_with_other_settings_is_refused(comparison: Comparison) -> None:
    refused = zoo(["compare", "--out", str(comparison.out), "--max-steps", "3"])
    assert refused.code == 2 and "trainer.max_steps" in refused.printed


def test_misspelt_architecture_fails_before_any_training(tmp_path: Path) -> None:
    refused = zoo(["compare", "--archs", "small_cnn,resnet19", "--data", str(tmp_path), "--out", str(tmp_path / "c")])
    assert refused.code == 2 and "resnet19" in refused.printed and not (tmp_path / "c").exists()


def test_report_from_existing_runs(comparison: Comparison, tmp_path: Path) -> None:
    runs = [comparison.out / "runs" / name for name in ("small_cnn", "resnet18")]
    outcome = zoo(["report", *map(str, runs), "--out", str(tmp_path / "report")])
    assert outcome.code == 0
    rows = results(tmp_path / "report")
    assert list(rows) == ["small_cnn", "resnet18"]
    assert rows["resnet18"]["predict_ms_per_image"] == results(comparison.out)["resnet18"]["predict_ms_per_image"]
    assert all((tmp_path / "report" / plot).stat().st_size > 10_000 for plot in ("depth_vs_error.png", "error_vs_cost.png"))
    assert "Best: " in (tmp_path / "report" / "report.md").read_text(encoding="utf-8")


def test_report_refuses_an_unfinished_run(tmp_path: Path) -> None:
    outcome = zoo(["report", str(tmp_path), "--out", str(tmp_path / "report")])
    assert outcome.code == 2 and "no summary.json" in outcome.printed


def test_findings_name_the_best_the_cheapest_near_it_and_the_depth_trend(comparison: Comparison) -> None:
    rows = results(comparison.out)
    small, resnet = rows["small_cnn"], rows["resnet18"]
    config = json.loads((comparison.out / "runs" / "small_cnn" / "summary.json").read_text())["config"]
    deep_best = [{**small, "top1_error": 30.0, "predict_ms_per_image": 1.0},
                 {**resnet, "top1_error": 29.5, "predict_ms_per_image": 4.0}]
    sentences = " ".join(findings(deep_best, [config]))
    assert "Best: resnet18 with 29.5% top-1 error." in sentences
    assert "Cheapest within 1 point of the best: small_cnn (30.0%, 1.00 ms per image against 4.00 ms, 4.0× faster)" in sentences
    assert "Deeper was better here" in sentences
    shallow_best = [{**small, "top1_error": 20.0}, {**resnet, "top1_error": 40.0}]
    sentences = " ".join(findings(shallow_best, [config]))
    assert "Deeper was not better here" in sentences and "No model within 1 point" in sentences
    longer = {**config, "trainer": {**config["trainer"], "epochs": 3}}
    assert "These runs differ in trainer.epochs: the comparison is not like for like." in findings(deep_best, [config, longer])


def test_pareto_front_keeps_what_nothing_cheaper_beats() -> None:
    # (cost, error): index 2 is beaten by the cheaper, better index 0; index 3 ties index 1's error at more cost
    points = [(1.0, 20.0), (4.0, 10.0), (2.0, 25.0), (8.0, 10.0), (16.0, 5.0)]
    assert pareto_front(points) == [0, 1, 4]


def test_comparison_config_files(tmp_path: Path) -> None:
    files = [path for path in sorted(Path("configs").glob("*.yaml")) if "archs" in path.read_text(encoding="utf-8")]
    assert Path("configs/compare-classic.yaml") in files
    assert all(load_comparison(path)[0] for path in files)
    archs, config = load_comparison("configs/compare-classic.yaml")
    assert archs == ["alexnet", "vgg16", "googlenet", "resnet18", "resnet50", "resnet152"]
    assert config.data.image_size == 224 and config.model.weights == "default"
    bad = tmp_path / "bad.yaml"
    bad.write_text("archs: [resnet18]\ntrainer:\n  epoch: 3\n")
    with pytest.raises(ConfigError, match="trainer.epoch"):
        load_comparison(bad)
    bad.write_text("archs: [resnet18]\nmodel:\n  arch: resnet50\n")
    with pytest.raises(ConfigError, match="list the architectures under archs"):
        load_comparison(bad)
