"""The model handed over: which checkpoint is chosen (--monitor), its calibration, TTA, and bad values of them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.helpers import run_summary, run_table
from zoo_cli.main import main

QUICK = ["--arch", "small_cnn", "--weights", "none", "--batch-size", "8", "--augment", "none", "--seed", "0",
         "--precision", "32", "--ema", "off"]  # fp32: the losses compared below would round apart in bf16 (AMX CPUs)


def _finetune(image_folder: Path, out: Path, *flags: str) -> dict:
    assert main(["finetune", "--data", str(image_folder), "--out", str(out), *QUICK, *flags]) == 0
    return run_summary(out)


def test_ties_on_validation_error_go_to_the_lower_validation_loss(image_folder: Path, tmp_path: Path) -> None:
    summary = _finetune(image_folder, tmp_path / "run", "--epochs", "6")
    rows = run_table(tmp_path / "run", "metrics.csv")
    errors = [float(row["val/top1_error"]) for row in rows]
    tied = [row for row in rows if float(row["val/top1_error"]) == min(errors)]
    assert len(tied) >= 2, "the case this test is about: several epochs share the lowest validation error"
    best = min(tied, key=lambda row: float(row["val/loss"]))
    assert summary["best_epoch"] == int(best["epoch"]) != int(tied[0]["epoch"])
    assert torch.load(tmp_path / "run" / "best.ckpt", weights_only=True)["epoch"] + 1 == summary["best_epoch"]
    selection = summary["selection"]
    assert selection["monitor"] == "val_error"
    assert selection["tie_break"] == "val_loss"
    assert selection["epoch"] == summary["best_epoch"]
    assert selection["epochs_tied"] == len(tied)
    assert selection["val_loss"] == selection["lowest_val_loss_of_tied"] == float(best["val/loss"])


def test_monitor_val_loss_keeps_the_epoch_of_lowest_validation_loss(image_folder: Path, tmp_path: Path) -> None:
    summary = _finetune(image_folder, tmp_path / "run", "--epochs", "3", "--monitor", "val_loss")
    rows = run_table(tmp_path / "run", "metrics.csv")
    lowest = min(rows, key=lambda row: float(row["val/loss"]))
    assert summary["best_epoch"] == int(lowest["epoch"])
    assert summary["selection"]["monitor"] == "val_loss"
    assert summary["val_loss"] == float(lowest["val/loss"])


@pytest.mark.parametrize(("flags", "message"), [
    (["--monitor", "val_acc"], "--monitor"),
    (["--tta", "mirror"], "--tta"),
    (["--ema", "often"], "--ema takes a number or auto or off"),
    (["--ema", "1.5"], "optim.ema must be a number above 0.0 and below 1.0 or auto or off, got 1.5"),
    (["--tta", "flip", "--flips-change-class"], "says a mirror image is another class: use --tta none"),
])
def test_bad_choices_are_one_line_before_any_work(flags: list[str], message: str, image_folder: Path,
                                                  tmp_path: Path, capsys) -> None:
    try:  # argparse refuses an unknown choice itself (SystemExit); zoo's checks return the status
        status = main(["finetune", "--data", str(image_folder), "--out", str(tmp_path / "run"), *QUICK, *flags])
    except SystemExit as stopped:
        status = stopped.code
    assert status == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert message in error
    assert not (tmp_path / "run").exists(), "nothing was started"


def test_ema_weights_are_the_ones_validated_chosen_and_handed_over(image_folder: Path, tmp_path: Path) -> None:
    from finetune.results.evaluate import evaluate

    run = tmp_path / "run"
    assert main(["finetune", "--data", str(image_folder), "--out", str(run), *QUICK[:-2], "--ema", "0.9",
                 "--epochs", "3"]) == 0
    summary = run_summary(run)
    assert summary["config"]["optim"]["ema"] == 0.9
    best = torch.load(run / "best.ckpt", weights_only=True)
    trained, averaged = best["current_model_state"], best["state_dict"]
    assert any(not torch.equal(trained[key], averaged[key]) for key in averaged), "the average is not the last step"
    # The saved (averaged) weights give exactly the validation loss that chose them.
    measured = evaluate(run, split="val", out=tmp_path / "eval").metrics
    assert measured["loss"] == pytest.approx(summary["val_loss"], abs=1e-4)


def test_more_epochs_on_a_finished_run_train_with_a_warm_restart(image_folder: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    _finetune(image_folder, run, "--epochs", "2", "--lr", "0.003")
    assert main(["finetune", "--resume", str(run), "--epochs", "4"]) == 0
    assert "warm restart: the run finished its 2 epochs" in capsys.readouterr().out
    rows = run_table(run, "metrics.csv")
    assert [row["epoch"] for row in rows] == ["1", "2", "3", "4"], "numbering continues"
    rates = [float(row["lr"]) for row in rows]
    # The first schedule ended at 0; the new epochs start near the full rate again and decay to 0 over themselves.
    assert rates[1] < 1e-6
    assert rates[2] > 0.4 * 0.003
    assert rates[3] < 1e-6
    assert run_summary(run)["epochs"] == 4


def test_tta_measures_the_test_split_and_travels_with_the_model(image_folder: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    summary = _finetune(image_folder, run, "--epochs", "1", "--max-steps", "2", "--tta", "flip")
    assert summary["tta"] == "flip"
    assert summary["config"]["trainer"]["tta"] == "flip"
    assert torch.load(run / "best.ckpt", weights_only=True)["zoo"]["tta"] == "flip"
    # zoo evaluate uses the model's own TTA by default: the very test error the run measured.
    assert main(["evaluate", str(run), "--out", str(tmp_path / "eval")]) == 0
    measured = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert measured["tta"] == "flip"
    assert measured["top1_error"] == summary["test_top1_error"]
    assert measured["loss"] == pytest.approx(summary["test_loss"], abs=1e-5)
    assert main(["export", str(run), "--format", "torchscript", "--out", str(tmp_path / "bundle")]) == 0
    assert json.loads((tmp_path / "bundle" / "zoo.json").read_text())["tta"] == "flip"
    image = next((image_folder / "coffee").iterdir())
    assert main(["predict", str(tmp_path / "bundle"), str(image), "--tta", "flip-crop", "--format", "json"]) == 0
    capsys.readouterr()


def test_flip_tta_on_a_model_whose_classes_change_under_a_mirror_is_refused(image_folder: Path, tmp_path: Path,
                                                                           capsys) -> None:
    run = tmp_path / "run"
    _finetune(image_folder, run, "--epochs", "1", "--max-steps", "1", "--flips-change-class")
    capsys.readouterr()
    for command in (["evaluate", str(run), "--out", str(tmp_path / "eval")],
                    ["predict", str(run), str(image_folder)]):
        assert main([*command, "--tta", "flip"]) == 2
        error = capsys.readouterr().err.strip()
        assert len(error.splitlines()) == 1
        assert "classes change under a mirror" in error
    assert not (tmp_path / "eval").exists()


def test_more_epochs_on_an_early_stopped_run_restart_and_are_judged_afresh(image_folder: Path, tmp_path: Path,
                                                                          capsys) -> None:
    run = tmp_path / "run"
    # A rate too small to move anything: the validation error never falls, so patience 1 stops after epoch 2.
    summary = _finetune(image_folder, run, "--epochs", "6", "--lr", "1e-9", "--patience", "1")
    assert summary["stopped_early_after_epoch"] == 2
    assert main(["finetune", "--resume", str(run), "--epochs", "4"]) == 0
    assert "warm restart: the run stopped early after epoch 2" in capsys.readouterr().out
    # Not stopped again at once by the old patience count: epochs 3 and 4 both train.
    assert [row["epoch"] for row in run_table(run, "metrics.csv")] == ["1", "2", "3", "4"]


@pytest.mark.slow
def test_tta_on_a_linear_probe_runs_the_whole_network_on_the_test_images(image_folder: Path, tmp_path: Path) -> None:
    # A probe trains on cached backbone features, which cannot be mirrored: the TTA test measure runs images.
    run = tmp_path / "run"
    assert main(["finetune", "--data", str(image_folder), "--out", str(run), "--arch", "efficientnet_lite0",
                 "--freeze", "backbone", "--image-size", "32", "--epochs", "1", "--max-steps", "2", "--tta", "flip",
                 "--batch-size", "8", "--seed", "0"]) == 0
    summary = run_summary(run)
    assert summary["tta"] == "flip"
    assert summary["config"]["optim"]["ema"] == "off"
    assert main(["evaluate", str(run), "--out", str(tmp_path / "eval")]) == 0
    measured = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert measured["tta"] == "flip"
    assert measured["loss"] == pytest.approx(summary["test_loss"], abs=1e-4)
