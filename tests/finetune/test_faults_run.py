"""Faults during a run (kills, SIGTERM, a full disk, files changing under it) and settings that would hang it:
nothing is lost, and each is one line (exit 2) naming the fix."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from finetune.shipping.sources import read_checkpoint
from finetune.training.saving import AtomicCheckpointIO
from tests.helpers import run_summary, run_table
from zoo_cli.main import main

# --checkpoint-interval 0: last.ckpt after every epoch, so a fault at epoch N finds epoch N - 1 saved.
QUICK = ["--arch", "small_cnn", "--weights", "none", "--batch-size", "8", "--augment", "none", "--seed", "0",
         "--image-size", "32", "--num-workers", "0", "--checkpoint-interval", "0"]


class Killed(BaseException):
    """Stands for kill -9: no callback handles it and nothing after it runs."""


def _start(image_folder: Path, out: Path, *extra: str) -> list[str]:
    return ["finetune", "--data", str(image_folder), "--out", str(out), *QUICK, *extra]


def _epochs(run_dir: Path) -> list[int]:
    return [int(row["epoch"]) for row in run_table(run_dir, "metrics.csv")]


def _checkpoint_epochs(path: Path) -> list[int]:
    """The epochs whose metrics rows ``path`` carries (the rows metrics.csv is rewritten to on resume)."""
    content = read_checkpoint(path)
    return [int(row["epoch"]) for row in content["callbacks"]["EpochMetrics"]["rows"]]


def _fail_saving(monkeypatch: pytest.MonkeyPatch, name: str, on_call: int, error: BaseException) -> None:
    """The ``on_call``-th save of checkpoint ``name`` writes half a file, then raises ``error``."""
    original = AtomicCheckpointIO.save_checkpoint
    calls = {"count": 0}

    def save(self, checkpoint, path, storage_options=None):
        if Path(path).name == name:
            calls["count"] += 1
            if calls["count"] == on_call:
                from zoo._io import write_atomic

                def half(temporary: Path) -> None:
                    temporary.write_bytes(b"PK\x03\x04 half a checkpoint")
                    raise error

                write_atomic(Path(path), half)
        original(self, checkpoint, path, storage_options)

    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", save)


def test_last_checkpoint_is_written_every_epoch_and_resume_does_not_repeat_rows(
        image_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A learning rate this small keeps the validation error flat, so best.ckpt never moves after epoch 1.
    out = tmp_path / "run"
    # Killed after epoch 3's row reached metrics.csv but before its last.ckpt did.
    _fail_saving(monkeypatch, "last.ckpt", 3, Killed())
    with pytest.raises(Killed):
        main(_start(image_folder, out, "--epochs", "6", "--lr", "1e-12"))
    assert _epochs(out) == [1, 2, 3]
    assert _checkpoint_epochs(out / "last.ckpt") == [1, 2]  # epoch 2's, though the error did not improve
    assert not [path for path in out.iterdir() if ".tmp-" in path.name]
    monkeypatch.undo()
    assert main(["finetune", "--resume", str(out)]) == 0
    assert _epochs(out) == [1, 2, 3, 4, 5, 6]
    assert run_summary(out)["epochs"] == 6


def test_last_checkpoint_leaves_at_most_the_interval_unsaved(
        image_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from types import SimpleNamespace

    import pytorch_lightning as pl

    from finetune.config import RunConfig, merge
    from finetune.training import saving
    from finetune.training.run import train

    clock = {"now": 1000.0}

    class EpochsOf25Seconds(pl.Callback):  # Lightning calls checkpoint callbacks last: each epoch they see takes 25 s
        def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            clock["now"] += 25.0

    monkeypatch.setattr(saving, "time", SimpleNamespace(monotonic=lambda: clock["now"]))
    saved: list[int] = []
    original = AtomicCheckpointIO.save_checkpoint

    def save(self, checkpoint, path, storage_options=None):
        if Path(path).name == "last.ckpt":
            saved.append(checkpoint["callbacks"]["EpochMetrics"]["rows"][-1]["epoch"])
        original(self, checkpoint, path, storage_options)

    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", save)
    config = merge(RunConfig(), {"data": {"path": str(image_folder), "batch_size": 8, "augment": "none",
                                          "num_workers": 0, "image_size": 28},
                                 "model": {"arch": "small_cnn", "weights": "none"},
                                 "trainer": {"epochs": 5, "checkpoint_interval": 60.0, "accelerator": "cpu"},
                                 "out": str(tmp_path / "run")})
    train(config, watchers=[EpochsOf25Seconds()])
    # Epoch 2 ends 50 s in: waiting for epoch 3 would leave 75 s unsaved. Epoch 4 likewise; epoch 5 is the last.
    assert saved == [2, 4, 5]
    assert "last.ckpt: written at the end of an epoch every 60 s" in capsys.readouterr().out


@pytest.mark.slow
def test_sigterm_saves_last_checkpoint_says_how_to_resume_and_exits_non_zero(
        image_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    command = [sys.executable, "-m", "zoo_cli.main", *_start(image_folder, out, "--epochs", "200")]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "metrics.csv").is_file() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "stopped by SIGTERM" in err
    assert f"zoo finetune --resume {out}" in err
    assert "Traceback" not in err
    done = _checkpoint_epochs(out / "last.ckpt")
    assert done
    assert not (out / "summary.json").exists()
    assert main(["finetune", "--resume", str(out), "--epochs", str(done[-1] + 1)]) == 0
    assert _epochs(out) == list(range(1, done[-1] + 2))


def test_a_full_disk_is_one_line_and_the_previous_checkpoint_survives(
        image_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    _fail_saving(monkeypatch, "last.ckpt", 2, OSError(errno.ENOSPC, "No space left on device"))
    assert main(_start(image_folder, out, "--epochs", "3")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "No space left on device" in err
    assert str(out) in err
    assert f"zoo finetune --resume {out}" in err
    assert _checkpoint_epochs(out / "last.ckpt") == [1]
    assert not [path for path in out.iterdir() if ".tmp-" in path.name]
    monkeypatch.undo()
    assert main(["finetune", "--resume", str(out)]) == 0
    assert _epochs(out) == [1, 2, 3]


def test_a_run_killed_before_its_first_checkpoint_restarts_with_resume(
        image_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    _fail_saving(monkeypatch, "last.ckpt", 1, Killed())
    with pytest.raises(Killed):
        main(_start(image_folder, out, "--epochs", "2"))
    monkeypatch.undo()
    stray = out / ".last.tmp-4242-deadbeef.ckpt"  # what kill -9 in the middle of the write leaves
    stray.write_bytes(b"half")
    assert not (out / "last.ckpt").exists()
    assert main(_start(image_folder, out, "--epochs", "2")) == 2  # a new run does not overwrite it
    assert "--resume" in capsys.readouterr().err
    assert main(["finetune", "--resume", str(out)]) == 0
    assert "starting it again from epoch 1" in capsys.readouterr().out
    assert not stray.exists()
    assert _epochs(out) == [1, 2]
    assert run_summary(out)["epochs"] == 2


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.helpers import make_image_folder

    root = tmp_path_factory.mktemp("finished")
    images = make_image_folder(root / "images")
    # A learning rate this small keeps the validation error flat: epoch 1 stays the best.
    assert main(_start(images, root / "run", "--epochs", "1", "--lr", "1e-12")) == 0
    return root / "run"


def _copy_run(run: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(run, tmp_path / "copy"))


@pytest.mark.parametrize(("damage", "message"), [
    (lambda path: path.write_bytes(path.read_bytes()[:1000]), "not a plain-tensor checkpoint"),
    (lambda path: path.write_bytes(b""), "not a plain-tensor checkpoint"),
    (lambda path: torch.save({"state_dict": {}}, path), "not a zoo checkpoint"),
    (lambda path: _relabel(path, arch="resnet18"), "holds a resnet18 network"),
    (lambda path: _relabel(path, classes=["x", "y", "z"]), "other classes (x, y, z)"),
])
def test_a_broken_last_checkpoint_on_resume_is_one_line(finished_run: Path, tmp_path: Path, damage, message: str,
                                                        capsys: pytest.CaptureFixture) -> None:
    run = _copy_run(finished_run, tmp_path)
    damage(run / "last.ckpt")
    assert main(["finetune", "--resume", str(run), "--epochs", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert message in err, err
    assert "delete" in err, err


def _relabel(path: Path, **metadata: object) -> None:
    content = torch.load(path, weights_only=True)
    content["zoo"].update(metadata)
    torch.save(content, path)


@pytest.mark.parametrize(("flags", "message"), [
    (["--arch", "resnet18"], "model.arch"),
    (["--data", "digits"], "data.path"),
    (["--lr", "0.5"], "optim.lr"),
    (["--out", "elsewhere"], "in place"),
])
def test_resume_refuses_changing_what_the_run_is(finished_run: Path, tmp_path: Path, flags: list[str], message: str,
                                                 capsys: pytest.CaptureFixture) -> None:
    run = _copy_run(finished_run, tmp_path)
    assert main(["finetune", "--resume", str(run), *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert message in err
    assert "new run" in err


def test_resume_with_fewer_epochs_than_trained_or_with_a_config_changes_nothing(
        finished_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = _copy_run(finished_run, tmp_path)
    _set_epoch(run / "last.ckpt", 4)  # as if it had trained 5 epochs
    before = (run / "config.yaml").read_bytes()
    config = tmp_path / "other.yaml"
    config.write_text("trainer:\n  epochs: 9\n", encoding="utf-8")
    for flags, message in ((["--epochs", "3"], "has already trained 5 epochs, more than --epochs 3"),
                           (["--config", str(config)], "--config would be ignored")):
        assert main(["finetune", "--resume", str(run), *flags]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err
        assert message in err, err
    assert (run / "config.yaml").read_bytes() == before  # still resumable with its own settings


def _set_epoch(path: Path, epoch: int) -> None:
    content = torch.load(path, weights_only=True)
    content["epoch"] = epoch
    torch.save(content, path)


def test_a_run_folder_in_use_is_refused_to_a_second_process(finished_run: Path, tmp_path: Path) -> None:
    from finetune.config import ConfigError
    from finetune.training.run_lock import lock_run_folder, release_run_folders

    run = _copy_run(finished_run, tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; "
                               "from finetune.training.run_lock import lock_run_folder; "
                               f"lock_run_folder(__import__('pathlib').Path({str(run)!r})); print('held', flush=True); "
                               "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match="is in use by another zoo process"):
            lock_run_folder(run)
        assert main(["finetune", "--resume", str(run), "--epochs", "2"]) == 2
        assert _epochs(run) == [1]  # nothing written beside the holder
    finally:
        holder.kill()
        holder.wait()
    lock_run_folder(run)  # the holder's lock ended with it, even killed
    release_run_folders()


def test_a_moved_run_resumes_with_its_settings_and_its_best_checkpoint(finished_run: Path, tmp_path: Path) -> None:
    run = _copy_run(finished_run, tmp_path)  # another path: Lightning alone would forget the best score
    assert main(["finetune", "--resume", str(run), "--arch", "small_cnn", "--epochs", "3"]) == 0
    assert _epochs(run) == [1, 2, 3]
    assert "epochs: 3" in (run / "config.yaml").read_text()
    best_epoch = run_summary(run)["best_epoch"]
    assert best_epoch == 1
    assert torch.load(run / "best.ckpt", weights_only=True)["epoch"] + 1 == best_epoch


@pytest.mark.parametrize(("flags", "message"), [
    (["--devices", "99", "--accelerator", "cpu"], "cores"),
    (["--devices", "0"], "at least 1"),
    (["--devices", ","], "a list like 0,1"),
    (["--strategy", "bogus"], "unknown strategy 'bogus'"),
    (["--accelerator", "tpu-9000"], "unknown accelerator"),
    (["--seed", "-1"], "trainer.seed"),
    # Round two: a TypeError after the run folder was made, a bogus metrics row, 39 GB, 1,000 processes.
    (["--devices", "-1"], "at least 1"),
    (["--strategy", "ddp_spawn"], "use ddp"),
    (["--image-size", "100000"], "data.image_size must be a whole number from 8 to 4096 or null, got 100000"),
    (["--num-workers", "1000"], "cores of this machine"),
])
def test_settings_that_would_hang_or_crash_are_one_line(image_folder: Path, tmp_path: Path, flags: list[str],
                                                        message: str, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    assert main(_start(image_folder, out, *flags)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert message in err, err
    assert not out.exists()  # refused before the run folder is made


def test_a_gpu_asked_for_on_a_machine_without_one_is_one_line(image_folder: Path, tmp_path: Path, monkeypatch,
                                                              capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(_start(image_folder, tmp_path / "run", "--accelerator", "gpu")) == 2
    assert "sees no GPU" in capsys.readouterr().err


@pytest.mark.parametrize("where", ["file", "under-file"])
def test_an_out_that_cannot_be_a_folder_is_one_line(image_folder: Path, tmp_path: Path, where: str,
                                                    capsys: pytest.CaptureFixture) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("keep me")
    out = blocker if where == "file" else blocker / "run"
    assert main(_start(image_folder, out)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "--out" in err
    assert blocker.read_text() == "keep me"


@pytest.mark.slow
def test_children_die_with_the_launching_process(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    child = ("import os, time; from finetune.runtime.processes import die_with_parent; die_with_parent(); "
             f"open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(120)")
    parent = ("import os, subprocess, sys, time; "
              "from finetune.runtime.processes import mark_launcher; mark_launcher(); "
              f"subprocess.Popen([sys.executable, '-c', {child!r}]); time.sleep(120)")
    launcher = subprocess.Popen([sys.executable, "-c", parent])
    deadline = time.monotonic() + 60
    while not pid_file.is_file() or not pid_file.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.1)
    launcher.kill()  # SIGKILL: the parent cannot clean up after itself
    launcher.wait()
    child_pid = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while _alive(child_pid):
        assert time.monotonic() < deadline, "the child outlived its parent"
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (dead, not yet reaped by init) counts as gone.
    return Path(f"/proc/{pid}/stat").is_file() and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_a_split_without_validation_images_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from tests.helpers import make_image_folder

    images = make_image_folder(tmp_path / "images", per_class=1, classes=("a", "b", "c", "d"))
    assert main(_start(images, tmp_path / "run")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "no validation images" in err
    assert not (tmp_path / "run").exists()


def test_classes_without_validation_images_are_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from tests.helpers import make_image_folder

    images = make_image_folder(tmp_path / "images", per_class=8)
    make_image_folder(tmp_path / "single", per_class=1, classes=("lonely",))
    (tmp_path / "single" / "lonely").rename(images / "lonely")
    assert main(_start(images, tmp_path / "run", "--max-steps", "1")) == 0
    err = capsys.readouterr().err
    assert "1 of 4 classes have no val images (lonely)" in err
    assert "1 of 4 classes have no test images (lonely)" in err


def test_an_image_damaged_during_training_stops_with_the_resume_command(
        image_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from finetune.training.module import Classifier

    out = tmp_path / "run"
    victim = sorted((image_folder / "chelsea").iterdir())[0]
    original = Classifier.on_train_epoch_end

    def damage_after_epoch_one(self) -> None:
        original(self)
        if self.current_epoch == 0:
            victim.write_bytes(victim.read_bytes()[:200])  # truncated, as by a failing copy

    Classifier.on_train_epoch_end = damage_after_epoch_one
    try:
        code = main(_start(image_folder, out, "--epochs", "3", "--cache", "none", "--test-fraction", "0",
                           "--val-fraction", "0.1"))
    finally:
        Classifier.on_train_epoch_end = original
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("error:") == 1, err
    assert err.endswith("\n"), err
    assert "Traceback" not in err, err
    err = err.splitlines()[-1]
    assert str(victim) in err
    assert "truncated" in err
    assert f"zoo finetune --resume {out}" in err
    assert _checkpoint_epochs(out / "last.ckpt") == [1]


def test_a_run_cut_short_mid_epoch_numbers_its_partial_epoch(image_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"  # 18 training images in batches of 8 (drop_last): 2 steps an epoch
    assert main(_start(image_folder, out, "--epochs", "5", "--max-steps", "3")) == 0
    assert [(row["epoch"], row["step"]) for row in run_table(out, "metrics.csv")] == [("1", "2"), ("2", "3")]
    summary = run_summary(out)
    assert (summary["epochs"], summary["steps"]) == (2, 3)


def test_resuming_a_run_that_finished_its_epochs_adds_no_row(finished_run: Path, tmp_path: Path) -> None:
    run = _copy_run(finished_run, tmp_path)  # as if killed while it wrote its summary
    (run / "summary.json").unlink()
    assert main(["finetune", "--resume", str(run)]) == 0
    assert _epochs(run) == [1]
    assert (run / "summary.json").is_file()
