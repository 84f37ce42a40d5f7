"""`zoo finetune` end to end: real Lightning runs of a few steps on tiny real image folders."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import zoo
from finetune.config import RunConfig, load_config
from finetune.training import lr_finder
from tests.helpers import CommandRun, run_summary, run_table
from zoo_cli.main import main

QUICK = ["--batch-size", "8", "--augment", "none", "--seed", "0"]
RUN_FILES = {
    "config.yaml", "classes.json", "train.csv", "val.csv", "test.csv", "skipped.csv", "metrics.csv",
    "best.ckpt", "last.ckpt", "learning_curves.png", "summary.json", "test_predictions.csv",
}


def test_a_run_writes_its_files_and_a_summary_of_what_it_trained(cli_run: CommandRun) -> None:
    out = cli_run.out
    assert RUN_FILES <= {p.name for p in out.iterdir()}
    summary = run_summary(out)
    assert summary["arch"] == "small_cnn"
    assert summary["classes"] == ["astronaut", "chelsea", "coffee"]
    assert (summary["num_train"], summary["num_val"], summary["num_test"], summary["num_skipped"]) == (18, 3, 3, 0)
    assert summary["epochs"] == 2
    assert summary["precision"] in {"32", "bf16-mixed"}
    # 3 classes: the top-3 always hits, so top-k is top-2, the largest k that can still miss.
    assert summary["k"] == 2
    assert summary["val_topk_error"] <= summary["val_top1_error"]
    assert summary["train_images_per_second"] > 0
    assert Path(summary["best_checkpoint"]).is_file()
    assert (out / "learning_curves.png").stat().st_size > 10_000


def test_the_phases_split_the_wall_time_without_overlapping(cli_run: CommandRun) -> None:
    summary = run_summary(cli_run.out)
    phases = summary["phase_seconds"]
    assert {"startup", "scan", "setup", "precision", "decode", "train", "calibration", "held_out",
            "report"} <= set(phases)
    assert all(seconds >= 0 for seconds in phases.values())
    assert sum(phases.values()) <= summary["wall_seconds"]


def test_the_summary_gives_the_best_epochs_row_of_metrics_csv(cli_run: CommandRun) -> None:
    summary, rows = run_summary(cli_run.out), run_table(cli_run.out, "metrics.csv")
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert "val/topk_error" in rows[0]
    # Every validation figure of the summary is the best epoch's row, counted from 1 as in the file.
    best = min(rows, key=lambda row: (float(row["val/top1_error"]), float(row["val/loss"])))
    assert summary["best_epoch"] == int(best["epoch"])
    assert summary["val_loss"] == float(best["val/loss"])
    assert summary["val_top1_error"] == float(best["val/top1_error"])
    assert summary["val_topk_error"] == float(best["val/topk_error"])


def test_the_config_keeps_auto_precision_and_the_run_folder_the_chosen_one(cli_run: CommandRun) -> None:
    # The precision as chosen, which every process of a DDP launch then reads (each would time bf16 anew); the
    # config keeps auto, so a resume on other hardware chooses again.
    saved = load_config(cli_run.out / "config.yaml")
    assert saved.model.arch == "small_cnn"
    assert saved.trainer.precision == "auto"
    assert (cli_run.out / "precision.txt").read_text() == f"{run_summary(cli_run.out)['precision']}\n"


def test_a_log_gets_one_line_per_epoch_and_no_lightning_chatter(cli_run: CommandRun) -> None:
    printed = cli_run.printed
    assert "test top-1 error (once, best checkpoint)" in printed
    assert f"run folder: {cli_run.out}" in printed
    # Not a terminal: one line per epoch, counted from 1, and no progress-bar redraws in the log.
    epochs = [line for line in printed.splitlines() if line.startswith("epoch ")]
    assert [line.split("  ")[0] for line in epochs] == ["epoch 1/2", "epoch 2/2"]
    assert all("val top-1 error" in line and "img/s" in line and "left ~" in line for line in epochs)
    assert "\r" not in printed
    assert "it/s" not in printed + cli_run.warned
    assert "GPU available" not in printed + cli_run.warned, "Lightning's start-up chatter is dropped"


def test_a_terminal_gets_the_live_progress_bar(image_folder: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    out = tmp_path / "run"
    assert main(["finetune", "--arch", "small_cnn", "--data", str(image_folder), "--epochs", "1", "--out", str(out),
                 *QUICK]) == 0
    printed = capsys.readouterr().out
    assert "Epoch 1/1: 100%" in printed, "the bar counts epochs from 1 and shows the step loss"
    assert "loss=" in printed, "the bar counts epochs from 1 and shows the step loss"
    assert not [line for line in printed.splitlines() if line.startswith("epoch 1/1  ")]


def test_digits_builtin_dataset_with_its_config(tmp_path: Path) -> None:
    out = tmp_path / "digits-run"
    argv = ["finetune", "--config", "configs/small_cnn-digits.yaml", "--epochs", "1", "--max-steps", "5",
            "--out", str(out)]
    assert main(argv) == 0
    summary = run_summary(out)
    assert summary["num_classes"] == 10
    assert summary["num_train"] + summary["num_val"] + summary["num_test"] == 1797
    assert summary["num_test"] == summary["num_val"] == 269  # 15% each, stratified over 10 classes
    assert summary["steps"] == 5
    assert summary["test_top1_error"] is not None
    assert (out / "best.ckpt").is_file()


def test_resnet18_at_a_small_size(image_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "resnet"
    argv = ["finetune", "--arch", "resnet18", "--data", str(image_folder), "--weights", "none", "--image-size", "32",
            "--max-steps", "2", "--out", str(out), *QUICK]
    assert main(argv) == 0
    summary = run_summary(out)
    assert summary["steps"] == 2
    assert summary["image_size"] == 32
    assert summary["memory_format"] == "channels_last"


@pytest.fixture
def placed_resnet18(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, torch.Tensor]:
    """resnet18's IMAGENET1K_V1 file, made here and placed where torchvision's cache keeps it."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    torch.manual_seed(7)
    reference = zoo.get_spec("resnet18").build().state_dict()
    for key, value in reference.items():  # non-trivial BatchNorm statistics, so drift would show
        if key.endswith(("running_mean", "running_var")):
            value.uniform_(0.5, 1.5)
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(reference, folder / "resnet18-f37072fd.pth")
    return reference


def _network_state(checkpoint: Path) -> dict[str, torch.Tensor]:
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    return {k.removeprefix("network."): v for k, v in state.items() if k.startswith("network.")}


def test_linear_probe_keeps_pretrained_backbone_and_batchnorm_statistics(
    placed_resnet18: dict[str, torch.Tensor], image_folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "probe"
    argv = ["finetune", "--arch", "resnet18", "--data", str(image_folder), "--weights", "default",
            "--freeze", "backbone", "--image-size", "32", "--epochs", "2", "--out", str(out), *QUICK]
    assert main(argv) == 0
    trained = _network_state(out / "last.ckpt")
    backbone = [k for k in placed_resnet18 if not k.startswith("fc.")]
    assert all(torch.equal(trained[k], placed_resnet18[k]) for k in backbone), "frozen backbone changed"
    assert run_summary(out)["weights"] == "IMAGENET1K_V1"
    assert trained["fc.linear.weight"].shape == (3, 512)


@pytest.mark.parametrize("bn_stats", ["batch", "frozen"])
def test_frozen_backbone_gets_no_gradients_then_unfreezes(bn_stats: str, placed_resnet18, image_folder: Path) -> None:
    import pytorch_lightning as pl

    from finetune.config import DataConfig, OptimConfig
    from finetune.data.datamodule import ImageDataModule
    from finetune.data.split import split_folder
    from finetune.training.freezing import BackboneFreeze
    from finetune.training.module import Classifier

    spec = zoo.get_spec("resnet18")
    split = split_folder(image_folder, 0.25, 0)
    network = zoo.create_model("resnet18", 3, weights="default")
    module = Classifier(network, "fc", 3, OptimConfig(freeze="until-epoch", unfreeze_epoch=1, lr=1e-3,
                                                                backbone_lr_mult=1.0, bn_stats=bn_stats))
    data = ImageDataModule(split, spec, 32, DataConfig(batch_size=6, augment="none"))
    grads_seen: dict[int, tuple[bool, bool]] = {}

    class WatchGradients(pl.Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
            backbone = any(p.grad is not None for p in pl_module.backbone_parameters())
            head = all(p.grad is not None for p in pl_module.head_parameters())
            grads_seen.setdefault(trainer.current_epoch, (backbone, head))

    trainer = pl.Trainer(max_epochs=2, callbacks=[BackboneFreeze(unfreeze_epoch=1), WatchGradients()], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=data)
    assert grads_seen[0] == (False, True), "epoch 0: only the head learns"
    assert grads_seen[1] == (True, True), "epoch 1: the backbone learns too"
    statistics = [key for key in placed_resnet18 if key.endswith(("running_mean", "running_var"))]
    state = network.state_dict()
    if bn_stats == "batch":
        assert not torch.equal(state["bn1.running_mean"], placed_resnet18["bn1.running_mean"]), \
            "unfrozen BatchNorm updates again"
    else:  # the weights learn, the statistics stay as trained
        assert not torch.equal(state["conv1.weight"], placed_resnet18["conv1.weight"])
        assert all(torch.equal(state[key], placed_resnet18[key]) for key in statistics)


def test_missing_weights_offline_is_one_line_naming_the_file(image_folder: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "never"
    assert main(["finetune", "--arch", "resnet50", "--data", str(image_folder), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert "resnet50-11ad3fa6.pth" in err
    assert "hub/checkpoints" in err
    assert "--weights none" in err
    assert not out.exists(), "a failed start leaves no run folder behind"


def test_unreadable_files_are_skipped_and_listed(image_folder: Path, tmp_path: Path, capsys) -> None:
    (image_folder / "coffee" / "truncated.jpg").write_bytes((image_folder / "coffee" / "0.jpg").read_bytes()[:200])
    (image_folder / "chelsea" / "empty.png").write_bytes(b"")
    out = tmp_path / "run"
    assert main(["finetune", "--arch", "small_cnn", "--data", str(image_folder), "--max-steps", "2", "--out", str(out),
                 *QUICK]) == 0
    with (out / "skipped.csv").open(encoding="utf-8") as file:
        skipped = {Path(row["path"]).name: row["reason"] for row in csv.DictReader(file)}
    assert set(skipped) == {"truncated.jpg", "empty.png"}
    assert all(skipped.values())
    assert "skipped 2 unreadable files" in capsys.readouterr().err
    assert run_summary(out)["num_skipped"] == 2


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: root / "missing", "does not exist"),
        (lambda root: (root / "one" / "only").mkdir(parents=True) or root / "one", "only 1 class folder"),
    ],
)
def test_bad_data_folders_are_one_line_errors(tmp_path: Path, make, message: str, capsys) -> None:
    assert main(["finetune", "--arch", "small_cnn", "--data", str(make(tmp_path)), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert message in err


def test_existing_run_folder_is_refused(image_folder: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert main(["finetune", "--arch", "small_cnn", "--data", str(image_folder), "--out", str(out)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "keep me"
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_interrupt_saves_last_checkpoint_and_resume_finishes(
    image_folder: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    from finetune.training.module import Classifier

    original = Classifier.training_step

    def interrupted(self, batch, batch_idx):  # Ctrl-C during the second epoch
        if self.current_epoch == 1:
            raise KeyboardInterrupt
        return original(self, batch, batch_idx)

    monkeypatch.setattr(Classifier, "training_step", interrupted)
    out = tmp_path / "run"
    argv = ["finetune", "--arch", "small_cnn", "--data", str(image_folder), "--epochs", "3", "--out", str(out), *QUICK]
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 130  # 128 + SIGINT, what a shell reports for Ctrl-C
    assert (out / "last.ckpt").is_file()
    assert f"zoo finetune --resume {out}" in capsys.readouterr().err
    monkeypatch.setattr(Classifier, "training_step", original)
    assert main(["finetune", "--resume", str(out)]) == 0
    assert [row["epoch"] for row in run_table(out, "metrics.csv")] == ["1", "2", "3"]
    assert run_summary(out)["epochs"] == 3


def test_same_seed_same_metrics(image_folder: Path, tmp_path: Path) -> None:
    runs = []
    for name in ("a", "b"):
        # augmentation on: its randomness is seeded too
        argv = ["finetune", "--arch", "small_cnn", "--data", str(image_folder), "--epochs", "2",
                "--out", str(tmp_path / name), "--batch-size", "8", "--seed", "3"]
        assert main(argv) == 0
        runs.append([{k: v for k, v in row.items()} for row in run_table(tmp_path / name, "metrics.csv")])
    assert runs[0] == runs[1]


def test_every_config_file_loads() -> None:
    files = sorted(Path("configs").glob("*.yaml"))
    assert {"default.yaml", "resnet152.yaml", "small_cnn-digits.yaml", "linear-probe.yaml"} <= {f.name for f in files}
    for path in files:
        if "archs" not in path.read_text(encoding="utf-8"):  # comparison files: tests/… of zoo compare
            assert isinstance(load_config(path), RunConfig)
    assert load_config("configs/default.yaml") == RunConfig()


@pytest.mark.slow
def test_ddp_with_two_cpu_processes(image_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "zoo_cli.main", "finetune", "--arch", "small_cnn", "--data", str(image_folder),
               "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp", "--epochs", "1", "--out", str(out),
               *QUICK, "--freeze", "until-epoch", "1"]  # the resumed epoch 2 averages the unfrozen backbone's gradients
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = run_summary(out)
    assert summary["test_top1_error"] is not None
    assert (out / "best.ckpt").is_file()
    assert len((out / "test_predictions.csv").read_text().splitlines()) == 1 + summary["num_test"]
    # Resumed, both processes continue from last.ckpt: the folder is handed to the second one on resume too.
    resumed = subprocess.run([sys.executable, "-m", "zoo_cli.main", "finetune", "--resume", str(out), "--epochs", "2"],
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert [row["epoch"] for row in run_table(out, "metrics.csv")] == ["1", "2"]
    assert run_summary(out)["epochs"] == 2


@pytest.mark.slow
def test_ddp_validation_counts_each_image_once(image_folder: Path, tmp_path: Path) -> None:
    from finetune.data.split import load_split
    from finetune.results.evaluate import model_logits
    from finetune.results.heldout import error_rates
    from finetune.shipping.sources import load_checkpoint

    out = tmp_path / "ddp"
    # 3 validation images on 2 processes: a padded sampler would count one of them twice. fp32 and undecoded
    # images, as the measurement by hand below.
    command = [sys.executable, "-m", "zoo_cli.main", "finetune", "--arch", "small_cnn", "--data", str(image_folder),
               "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp", "--epochs", "1", "--precision", "32",
               "--cache", "none", "--out", str(out), *QUICK]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    val = load_split(out).val
    assert len(val) == 3
    # One epoch: best.ckpt holds the weights the epoch's row measured; by hand, over the saved validation split.
    logits, labels = model_logits(load_checkpoint(out / "best.ckpt"), val, batch_size=8)
    by_hand = error_rates(logits, labels)
    [row] = run_table(out, "metrics.csv")
    assert float(row["val/top1_error"]) == pytest.approx(by_hand.top1_error, abs=1e-3)
    assert float(row["val/loss"]) == pytest.approx(by_hand.loss, abs=1e-4)
    summary = run_summary(out)
    assert summary["num_val"] == 3
    assert summary["val_top1_error_ci95"] == by_hand.top1_error_ci95
    # The temperature is fitted on rank 0 over the whole validation split.
    assert summary["val_nll_before"] == pytest.approx(by_hand.loss, abs=1e-4)


def test_ddp_refuses_fewer_validation_images_than_processes(image_folder: Path) -> None:
    import dataclasses

    import pytorch_lightning as pl

    from finetune.config import ConfigError, DataConfig
    from finetune.data.datamodule import ImageDataModule
    from finetune.data.split import split_folder

    split = split_folder(image_folder, val_fraction=0.15, test_fraction=0.15, seed=0)
    data = ImageDataModule(dataclasses.replace(split, val=split.val[:1]), zoo.get_spec("small_cnn"), 32, DataConfig())
    # Not launched: the trainer only tells the data module how many processes share the validation images.
    data.trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False, enable_checkpointing=False)
    with pytest.raises(ConfigError, match="1 validation image cannot be shared by 2 processes"):
        data.setup("fit")


def test_biases_and_normalisation_get_no_weight_decay() -> None:
    from finetune.config import OptimConfig
    from finetune.training.module import Classifier

    network = zoo.create_model("resnet18", 3, dropout=0.2)
    optim = OptimConfig(lr=1e-3, weight_decay=0.05, backbone_lr_mult=0.1)
    groups = Classifier(network, heads=("fc",), num_classes=3, optim=optim).parameter_groups()
    names = {id(p): name for name, p in network.named_parameters()}
    by_setting = {(group["lr"], group["weight_decay"]): {names[id(p)] for p in group["params"]} for group in groups}
    assert by_setting[(1e-3, 0.05)] == {"fc.linear.weight"}
    assert by_setting[(1e-3, 0.0)] == {"fc.linear.bias"}
    backbone_decay, backbone_plain = by_setting[(1e-4, 0.05)], by_setting[(1e-4, 0.0)]
    assert "conv1.weight" in backbone_decay
    assert all("conv" in name or "downsample.0" in name for name in backbone_decay)
    assert {"bn1.weight", "bn1.bias", "layer1.0.bn2.weight"} <= backbone_plain
    assert all(network.get_parameter(name).ndim == 1 for name in backbone_plain)
    assert sum(len(group["params"]) for group in groups) == len(list(network.parameters()))


@pytest.mark.parametrize(("freeze", "judged_from"), [([], 1), (["--freeze", "until-epoch", "2"], 3)])
def test_patience_stops_a_run_that_stopped_improving(tmp_path: Path, freeze: list[str], judged_from: int) -> None:
    out = tmp_path / "diverging"
    argv = ["finetune", "--arch", "small_cnn", "--data", "digits", "--weights", "none", "--augment", "none",
            "--batch-size", "256", "--lr", "20", "--epochs", "8", "--patience", "1", *freeze, "--out", str(out)]
    assert main(argv) == 0
    summary, rows = run_summary(out), run_table(out, "metrics.csv")
    # A frozen warm-up is not judged: the best of the judged epochs, then one more without progress.
    judged = [row for row in rows if int(row["epoch"]) >= judged_from]
    best = min(int(row["epoch"]) for row in judged
               if float(row["val/top1_error"]) == min(float(r["val/top1_error"]) for r in judged))
    assert summary["stopped_early_after_epoch"] == summary["epochs"] == best + 1 < 8
    assert len(rows) == summary["epochs"]


def test_lr_auto_finds_a_rate_on_the_training_split_and_records_it(image_folder: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "auto"
    assert main(["finetune", "--arch", "small_cnn", "--data", str(image_folder), "--epochs", "1", "--lr", "auto",
                 "--out", str(out), *QUICK]) == 0
    finding = json.loads((out / "lr_find.json").read_text(encoding="utf-8"))
    assert finding["split"] == "train"
    assert len(finding["lr"]) == len(finding["loss"]) > 10
    assert finding["steps"] == len(finding["lr"]) <= finding["max_steps"] == lr_finder.STEPS  # as the log shows
    assert 1e-6 <= finding["suggestion"] <= 1.0
    assert finding["suggestion"] in finding["lr"]
    assert (out / "lr_find.png").stat().st_size > 10_000
    assert load_config(out / "config.yaml").optim.lr == finding["suggestion"], "config.yaml holds the number"
    assert run_summary(out)["config"]["optim"]["lr"] == finding["suggestion"]
    assert f"learning rate: {finding['suggestion']:.2e}" in capsys.readouterr().out


def test_lr_find_alone_prints_a_suggestion_and_touches_no_held_out_image(image_folder: Path, tmp_path: Path, capsys,
                                                                         monkeypatch) -> None:
    from finetune.data.datamodule import ImageDataModule

    def refuse(self, *args):
        raise AssertionError("the learning-rate finder asked for validation or test images")

    monkeypatch.setattr(ImageDataModule, "val_dataloader", refuse)
    monkeypatch.setattr(ImageDataModule, "test_dataloader", refuse)
    assert main(["lr-find", "--arch", "small_cnn", "--data", str(image_folder), *QUICK]) == 0
    printed = capsys.readouterr().out
    assert "suggested learning rate for small_cnn: " in printed
    assert "-step range test on the training split" in printed
    # set against the rate zoo's recipe would train with, and only the settings that apply to the test
    assert "zoo's recipe trains this run at 3e-03" in printed
    assert "the suggestion" in printed
    assert "trainer.epochs" not in printed
    assert "optim.lr:" not in printed
    assert "optim.freeze: none" in printed
    assert main(["lr-find", "--arch", "small_cnn", "--data", str(image_folder), *QUICK, "--lr", "0.01"]) == 0
    assert "use it with --lr" in capsys.readouterr().out  # a rate of one's own: no recipe to compare with
    assert not Path("lr_find.png").exists(), "without --out nothing is written"


def test_a_bad_learning_rate_is_one_line(image_folder: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        main(["finetune", "--data", str(image_folder), "--lr", "fast"])
    assert "--lr takes a number or auto, got 'fast'" in capsys.readouterr().err


def test_csv_logger_writes_lightnings_log_into_the_run_folder(image_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "logged"
    assert main(["finetune", "--arch", "small_cnn", "--data", str(image_folder), "--epochs", "2", "--logger", "csv",
                 "--out", str(out), *QUICK]) == 0
    rows = run_table(out / "logs" / "version_0", "metrics.csv")
    errors = [float(row["val/top1_error"]) for row in rows if row.get("val/top1_error")]
    assert errors == pytest.approx([float(row["val/top1_error"]) for row in run_table(out, "metrics.csv")], abs=1e-4)


@pytest.mark.parametrize(("logger", "command"), [("tensorboard", 'pip install "zoo[tensorboard]"'),
                                                 ("mlflow", 'pip install "zoo[mlflow]"')])
def test_a_logger_whose_package_is_missing_is_one_line(image_folder: Path, tmp_path: Path, capsys, monkeypatch,
                                                        logger: str, command: str) -> None:
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None)
    assert main(["finetune", "--arch", "small_cnn", "--data", str(image_folder), "--logger", logger,
                 "--out", str(tmp_path / "run"), *QUICK]) == 2
    assert command in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flag", [["--lr", "nan"], ["--lr", "inf"], ["--weight-decay", "nan"],
                                  ["--label-smoothing", "nan"], ["--dropout", "nan"]])
def test_non_finite_settings_are_refused(image_folder: Path, tmp_path: Path, capsys, flag: list[str]) -> None:
    assert main(["finetune", "--data", str(image_folder), "--out", str(tmp_path / "run"), *flag]) == 2
    assert flag[0].lstrip("-").replace("-", "_") in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_loss_that_stops_being_finite_ends_the_run_in_one_line(image_folder: Path, tmp_path: Path, capsys,
                                                                 monkeypatch) -> None:
    from finetune.training.module import Classifier

    original = Classifier.training_step

    def diverging(self, batch, batch_idx):  # the third step's loss is NaN
        loss = original(self, batch, batch_idx)
        return loss * float("nan") if self.global_step == 2 else loss

    monkeypatch.setattr(Classifier, "training_step", diverging)
    out = tmp_path / "run"
    assert main(["finetune", "--arch", "small_cnn", "--data", str(image_folder), "--epochs", "3", "--out", str(out),
                 *QUICK]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "the training loss became nan at epoch 2, step 3" in error
    assert "lower --lr" in error


@pytest.mark.slow
def test_two_nodes_on_this_machine_end_like_one_node_with_two_processes(image_folder: Path, tmp_path: Path) -> None:
    import socket

    with socket.socket() as probe:  # a free port for the nodes to meet on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "zoo_cli.main", "finetune", "--arch", "small_cnn", "--data", str(image_folder),
               "--accelerator", "cpu", "--strategy", "ddp", "--epochs", "2", *QUICK,
               # Two runs compared: with auto each would time bf16 on its own, and may choose another precision.
               "--precision", "32"]
    # As on a cluster: the same command on every node, told its rank and where node 0 listens.
    nodes = [subprocess.Popen([*command, "--num-nodes", "2", "--devices", "1", "--out", str(tmp_path / "nodes")],
                              env={**os.environ, "NODE_RANK": str(rank), "MASTER_ADDR": "127.0.0.1",
                                   "MASTER_PORT": str(port)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    ended = [node.communicate(timeout=600) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], [err[-1500:] for _, err in ended]
    one = subprocess.run([*command, "--devices", "2", "--out", str(tmp_path / "one")], capture_output=True, text=True,
                         timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
    two_nodes, one_node = run_table(tmp_path / "nodes", "metrics.csv"), run_table(tmp_path / "one", "metrics.csv")
    assert [row["epoch"] for row in two_nodes] == ["1", "2"]
    assert [{k: v for k, v in row.items()} for row in two_nodes] == one_node


def test_several_nodes_need_an_out_folder(image_folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["finetune", "--arch", "small_cnn", "--data", str(image_folder), "--num-nodes", "2"]) == 2
    assert "--num-nodes 2 needs --out" in capsys.readouterr().err
