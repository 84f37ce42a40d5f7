"""Honest numbers end to end: a test split measured once, chance and "did not learn", calibrated softmax."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from finetune.data.split import load_split
from finetune.results.stats import wilson_interval
from finetune.shipping.sources import load_source, read_checkpoint
from tests.helpers import CommandRun, make_image_folder, per_test_environment, run_command, run_summary, run_table
from zoo_cli.main import main

QUICK = ["--arch", "small_cnn", "--weights", "none", "--batch-size", "8", "--augment", "none", "--seed", "0"]


@pytest.fixture(scope="module")
def held_out(tmp_path_factory: pytest.TempPathFactory) -> CommandRun:
    """``zoo finetune`` for 2 epochs on 3 classes × 8 photos, once for the tests that read what its test split gave."""
    root = tmp_path_factory.mktemp("held-out")
    with per_test_environment(tmp_path_factory):
        images = make_image_folder(root / "images")
        return run_command(["finetune", "--data", str(images), "--epochs", "2", "--out", str(root / "run"), *QUICK],
                           root / "run")


def test_test_predictions_csv_has_a_row_per_test_image_in_split_order(held_out: CommandRun) -> None:
    split, rows = load_split(held_out.out), run_table(held_out.out, "test_predictions.csv")
    assert list(rows[0]) == ["path", "label", "predicted", "probability"]
    assert [Path(row["path"]) for row in rows] == [sample.path.absolute() for sample in split.test]
    assert [row["label"] for row in rows] == [split.classes[sample.label] for sample in split.test]


def test_a_test_prediction_is_one_of_the_classes_with_its_probability(held_out: CommandRun) -> None:
    split, rows = load_split(held_out.out), run_table(held_out.out, "test_predictions.csv")
    assert all(row["predicted"] in split.classes for row in rows)
    assert all(1 / 3 <= float(row["probability"]) <= 1 for row in rows)  # the top one of 3 classes


def test_the_test_error_is_measured_once_on_the_test_split_with_a_wilson_interval(held_out: CommandRun) -> None:
    summary, rows = run_summary(held_out.out), run_table(held_out.out, "test_predictions.csv")
    errors = sum(row["label"] != row["predicted"] for row in rows)
    assert summary["num_test"] == len(rows) == 3
    assert summary["selected_on"] == "val"
    assert summary["reported_on"] == "test"
    assert summary["test_top1_error"] == pytest.approx(100 * errors / 3, abs=1e-3)
    assert summary["test_top1_error_ci95"] == pytest.approx(list(wilson_interval(errors, 3)), abs=1e-3)


def test_the_run_learned_when_its_test_interval_lies_below_chance(held_out: CommandRun) -> None:
    summary = run_summary(held_out.out)
    assert summary["chance_top1_error"] == pytest.approx(200 / 3, abs=1e-3)  # 3 balanced classes
    assert summary["learned"] == (summary["test_top1_error_ci95"][1] < summary["chance_top1_error"])


def test_the_temperature_is_fitted_on_validation_and_stored_with_the_best_checkpoint(held_out: CommandRun) -> None:
    summary = run_summary(held_out.out)
    assert summary["val_nll_after"] <= summary["val_nll_before"]
    assert read_checkpoint(held_out.out / "best.ckpt")["zoo"]["temperature"] == summary["temperature"] > 0


def test_predict_divides_the_logits_by_the_temperature(held_out: CommandRun) -> None:
    summary, split = run_summary(held_out.out), load_split(held_out.out)
    model = load_source(held_out.out).model
    batch = torch.stack([model.transform(Image.open(sample.path).convert("RGB")) for sample in split.test])
    assert torch.allclose(model.predict_proba(batch), (model.logits(batch) / summary["temperature"]).softmax(dim=1))


def test_the_test_error_is_printed_once_with_its_number_of_images(held_out: CommandRun) -> None:
    assert "test top-1 error (once, best checkpoint)" in held_out.printed
    assert "n = 3" in held_out.printed


def test_test_images_never_influence_training_or_selection(image_folder: Path, tmp_path: Path) -> None:
    argv = ["finetune", "--data", str(image_folder), "--epochs", "2", *QUICK]
    assert main([*argv, "--out", str(tmp_path / "before")]) == 0
    test_images = [sample.path for sample in load_split(tmp_path / "before").test]
    for path in test_images:  # every test image becomes a photo of another class
        donor = next(other for other in test_images if other.parent != path.parent)
        Image.open(donor).rotate(90).save(path)
    assert main([*argv, "--out", str(tmp_path / "after")]) == 0

    before, after = (read_checkpoint(tmp_path / name / "best.ckpt") for name in ("before", "after"))
    assert before["state_dict"].keys() == after["state_dict"].keys()
    assert all(torch.equal(before["state_dict"][key], after["state_dict"][key]) for key in before["state_dict"])
    assert before["zoo"]["temperature"] == after["zoo"]["temperature"], "fitted on validation images only"
    metrics = [(tmp_path / name / "metrics.csv").read_text() for name in ("before", "after")]
    assert metrics[0] == metrics[1], "no epoch, loss or selection saw the test images"
    predictions = [run_table(tmp_path / name, "test_predictions.csv") for name in ("before", "after")]
    assert predictions[0] != predictions[1], "the test itself did see them"


def test_a_run_that_stays_at_chance_is_flagged(tmp_path: Path, capsys) -> None:
    common = ["finetune", "--data", "digits", "--epochs", "1", "--max-steps", "12", "--arch", "small_cnn",
              "--weights", "none", "--augment", "none", "--batch-size", "64"]
    assert main([*common, "--lr", "0.003", "--out", str(tmp_path / "sane")]) == 0
    sane = run_summary(tmp_path / "sane")
    assert sane["learned"]
    assert sane["test_top1_error_ci95"][1] < sane["chance_top1_error"]
    assert "did not learn" not in capsys.readouterr().err

    assert main([*common, "--lr", "20", "--out", str(tmp_path / "too-fast")]) == 0
    diverged = run_summary(tmp_path / "too-fast")
    assert not diverged["learned"]
    assert diverged["test_top1_error_ci95"][1] >= diverged["chance_top1_error"]
    assert diverged["chance_top1_error"] == pytest.approx(100 * (1 - 28 / 269), abs=0.5)  # digits: ~10% per class
    warning = capsys.readouterr().err
    assert "small_cnn did not learn: its test top-1 error" in warning
    assert "try a lower --lr" in warning


def test_without_a_test_split_every_figure_says_validation(image_folder: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["finetune", "--data", str(image_folder), "--epochs", "1", "--test-fraction", "0", "--out", str(out),
                 *QUICK]) == 0
    summary = run_summary(out)
    assert summary["num_test"] == 0
    assert summary["test_top1_error"] is None
    assert summary["reported_on"] == "val"
    assert not (out / "test_predictions.csv").exists()
    printed = capsys.readouterr()
    assert "no test images" in printed.err
    assert "optimistic" in printed.err
    assert "test top-1 error" not in printed.out
    assert "val top-1 error (chose the checkpoint: optimistic)" in printed.out
