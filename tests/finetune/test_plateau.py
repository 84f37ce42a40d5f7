"""The plateau schedule: the rate holds until the validation loss stops falling, then anneals, and the run stops."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import pytest
import torch

import zoo
from finetune.config import RunConfig, merge
from finetune.data.split import split_folder
from finetune.results.calibration import fit_temperature
from finetune.training.module import calibrated_loss, standard_error
from finetune.training.plateau import floor_epochs, improved, lr_factor
from finetune.training.recipe import choose
from tests.helpers import run_table
from zoo_cli.main import main


def test_the_rate_holds_then_anneals_from_the_plateau_or_over_the_last_fifth() -> None:
    warmup, total = 10, 110  # the default anneal: the last 20 of 100 steps
    assert [lr_factor(step, warmup, total, None) for step in (10, 60, 90)] == [1.0, 1.0, 1.0]
    assert lr_factor(100, warmup, total, None) == pytest.approx(0.5)
    assert lr_factor(110, warmup, total, None) == 0.0
    plateau = (40, 20)
    assert lr_factor(39, warmup, total, plateau) == 1.0
    assert lr_factor(50, warmup, total, plateau) == pytest.approx(0.5)
    assert lr_factor(60, warmup, total, plateau) == 0.0
    assert lr_factor(100, warmup, total, plateau) == 0.0
    assert lr_factor(100, warmup, total, (95, 5)) == pytest.approx(0.5), "a plateau inside the last fifth: no change"


def test_zoo_chooses_the_plateau_only_for_the_epochs_of_a_from_scratch_run(image_folder: Path) -> None:
    split = split_folder(image_folder)
    spec = zoo.get_spec("small_cnn")
    scratch = merge(RunConfig(), {"model": {"arch": "small_cnn", "weights": "none"}})
    resolved, decisions = choose(scratch, spec, split, 28, pretrained=False, on_gpu=False)
    assert resolved.optim.schedule == "plateau", "30 epochs: the ceiling"
    assert resolved.trainer.epochs == 30, "30 epochs: the ceiling"
    assert "the run stops there" in next(d.reason for d in decisions if d.key == "optim.schedule")
    given = merge(scratch, {"trainer": {"epochs": 4}})
    assert choose(given, spec, split, 28, pretrained=False, on_gpu=False)[0].optim.schedule == "auto"  # cosine
    assert choose(scratch, spec, split, 28, pretrained=True, on_gpu=False)[0].optim.schedule == "auto"


def test_a_flat_validation_loss_anneals_after_the_floor_and_stops(image_folder: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    # A rate this small keeps the validation loss flat: the plateau is there from epoch 1, judged at epoch 5 (the
    # floor: 45% of the ceiling of 11 epochs).
    assert main(["finetune", "--arch", "small_cnn", "--data", str(image_folder), "--weights", "none", "--image-size",
                 "28", "--batch-size", "8", "--augment", "none", "--lr", "1e-9", "--schedule", "plateau",
                 "--epochs", "11", "--out", str(out)]) == 0
    assert "the learning rate anneals over 2 epochs and the run stops after epoch 7" in capsys.readouterr().out
    rows = run_table(out, "metrics.csv")
    rates = [float(row["lr"]) / 1e-9 for row in rows]
    assert len(rows) == 7
    assert rates[3:5] == pytest.approx([1.0, 1.0])
    assert rates[5] == pytest.approx(0.5 * (1 + math.cos(math.pi / 2)), abs=0.05)
    assert rates[6] == 0.0


def test_the_plateau_is_judged_after_nearly_half_the_ceiling() -> None:
    # MNIST's loss at the held rate is flat from epoch 3-5, while 15 epochs still teach the network more.
    assert [floor_epochs(ceiling) for ceiling in (11, 15, 20, 30)] == [5, 7, 9, 14]


def test_a_run_killed_during_its_anneal_resumes_it(image_folder: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from finetune.training.saving import AtomicCheckpointIO

    class Killed(BaseException):
        """Stands for kill -9: nothing after it runs."""

    original, saves = AtomicCheckpointIO.save_checkpoint, []

    def save(self, checkpoint, path, storage_options=None):
        saves.append(Path(path).name)
        if saves.count("last.ckpt") == 7:  # epoch 7's: the last epoch of the anneal is lost
            raise Killed
        original(self, checkpoint, path, storage_options)

    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", save)
    out = tmp_path / "run"
    with pytest.raises(Killed):
        main(["finetune", "--arch", "small_cnn", "--data", str(image_folder), "--weights", "none", "--image-size", "28",
              "--batch-size", "8", "--augment", "none", "--lr", "1e-9", "--schedule", "plateau", "--epochs", "11",
              "--checkpoint-interval", "0", "--out", str(out)])
    monkeypatch.undo()
    assert main(["finetune", "--resume", str(out)]) == 0
    rates = [float(row["lr"]) / 1e-9 for row in run_table(out, "metrics.csv")]
    assert len(rates) == 7, rates
    assert rates[5] == pytest.approx(0.5, abs=0.05), rates
    assert rates[6] == 0.0, rates


def test_a_fall_inside_the_validation_losss_noise_is_not_an_improvement() -> None:
    # best 0.0319, standard error 0.0112: a fall must pass max(1% of 0.0319, 0.5 × 0.0112) = 0.0056
    assert improved(0.0278, None, 0.0112)
    assert not improved(0.0278, 0.0319, 0.0112), "0.0041 below the best: inside half a standard error"
    assert improved(0.0262, 0.0319, 0.0112), "0.0057 below: past it"
    assert not improved(0.99, 1.0, 0.0), "without a standard error the 1% rule holds"


def test_the_standard_error_of_the_validation_loss_is_the_per_image_losses_one() -> None:
    losses = torch.tensor([0.1, 0.4, 0.0, 1.3, 0.2])
    expected = statistics.stdev(losses.tolist()) / math.sqrt(5)  # sample standard deviation over √n
    got = standard_error(losses.mean(), losses.square().mean(), torch.tensor(5.0))
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_the_plateau_watches_the_loss_at_its_best_temperature_which_sharpening_alone_leaves_unchanged() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(300, 5, generator=generator)
    labels = torch.multinomial(logits.softmax(dim=1), 1, generator=generator).squeeze(1)
    loss, error = calibrated_loss(logits, labels)
    sharper, _ = calibrated_loss(4 * logits, labels)
    plain = torch.nn.functional.cross_entropy
    assert plain(4 * logits, labels) > 1.5 * plain(logits, labels), "the plain loss moves with the scale alone"
    assert float(sharper) == pytest.approx(float(loss), rel=1e-3), "the calibrated one does not"
    better, _ = calibrated_loss(logits + 2 * torch.nn.functional.one_hot(labels, 5), labels)
    assert float(better) < float(loss) - 3 * float(error), "a better ranking of the classes lowers it"
    per_image = plain(logits / fit_temperature(logits, labels), labels, reduction="none")
    assert float(error) == pytest.approx(statistics.stdev(per_image.tolist()) / math.sqrt(300), rel=1e-4)
