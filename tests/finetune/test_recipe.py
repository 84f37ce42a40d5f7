"""The data-aware defaults: what zoo decides for glyphs, faces and photos, and that a given value always wins."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import zoo
from finetune.config import RunConfig, merge
from finetune.data.builtin import resolve_data
from finetune.data.split import split_folder
from finetune.training.recipe import choose, profile_data
from tests.helpers import PHOTOS, make_image_folder


def _decided(config: RunConfig, folder: Path, *, pretrained: bool, on_gpu: bool = False) -> tuple[RunConfig, dict]:
    split = split_folder(folder)
    spec = zoo.get_spec(config.model.arch)
    resolved, decisions = choose(config, spec, split, config.data.image_size or spec.input_size, pretrained, on_gpu)
    return resolved, {decision.key: decision for decision in decisions}


def faces_folder(root: Path) -> Path:
    """scikit-image's lfw_subset: 100 face and 100 non-face grey crops of 25 px."""
    from skimage import data

    images = data.lfw_subset()
    for index, image in enumerate(images):
        folder = root / ("face" if index < 100 else "not-face")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((image * 255).astype(np.uint8)).save(folder / f"{index}.png")
    return root


def test_digits_from_scratch_get_shifts_a_high_rate_and_enough_steps() -> None:
    config = merge(RunConfig(), {"model": {"arch": "small_cnn", "weights": "none"}, "data": {"image_size": 28}})
    resolved, decisions = _decided(config, resolve_data("digits"), pretrained=False)
    assert (resolved.data.augment, resolved.optim.freeze, resolved.optim.lr) == ("shift", "none", 3e-3)
    assert (resolved.optim.backbone_lr_mult, resolved.optim.bn_stats) == (1.0, "batch")
    assert resolved.trainer.epochs == 15
    assert "glyph-like" in decisions["data.augment"].reason


def test_grey_faces_are_not_glyphs(tmp_path: Path) -> None:
    profile = profile_data(split_folder(faces_folder(tmp_path / "faces")))
    assert profile.grey
    assert profile.side == 25
    assert not profile.glyph_like
    config = merge(RunConfig(), {"model": {"arch": "small_cnn", "weights": "none"}, "data": {"image_size": 28}})
    resolved, decisions = _decided(config, tmp_path / "faces", pretrained=False)
    assert resolved.trainer.epochs == 30
    # 70 training images a class of 25 px: no random crops (benchmarks/defaults: 6.0% test error with, 4.0% without).
    assert resolved.data.augment == "none"
    assert "small images (25 px) from scratch, 70 per class" in decisions["data.augment"].reason


def test_small_photos_from_scratch_with_many_per_class_get_crops_and_flips(tmp_path: Path) -> None:
    folder = make_image_folder(tmp_path / "many", per_class=440, size=32, classes=PHOTOS[:2])
    config = merge(RunConfig(), {"model": {"arch": "small_cnn", "weights": "none"}})
    resolved, decisions = _decided(config, folder, pretrained=False)
    assert resolved.data.augment == "standard"
    assert "random crops and flips preserve their class" in decisions["data.augment"].reason


def test_pretrained_photos_on_a_cpu_train_a_head_on_cached_features(tmp_path: Path) -> None:
    folder = make_image_folder(tmp_path / "photos", per_class=20, size=96)
    resolved, decisions = _decided(RunConfig(), folder, pretrained=True)
    assert (resolved.data.augment, resolved.optim.freeze, resolved.optim.lr) == ("light", "backbone", 3e-3)
    assert (resolved.optim.backbone_lr_mult, resolved.optim.bn_stats) == (1.0, "frozen")
    assert 10 <= resolved.trainer.epochs <= 20
    reason = decisions["optim.freeze"].reason
    assert "a full fine-tune of resnet18" in reason
    assert "--freeze until-epoch 1" in reason


def test_pretrained_photos_on_a_gpu_fine_tune_with_a_warm_up_and_a_lower_backbone_rate(tmp_path: Path) -> None:
    folder = make_image_folder(tmp_path / "photos", per_class=20, size=96)
    resolved, _ = _decided(RunConfig(), folder, pretrained=True, on_gpu=True)
    optim = resolved.optim
    assert (optim.freeze, optim.unfreeze_epoch, optim.backbone_lr_mult, optim.bn_stats) == \
        ("until-epoch", 1, 0.1, "frozen")
    assert resolved.optim.lr == 1e-3
    assert 5 <= resolved.trainer.epochs <= 20


def test_a_long_fine_tune_on_a_gpu_starts_with_a_probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from finetune.training import recipe

    folder = make_image_folder(tmp_path / "photos", per_class=20, size=96)
    monkeypatch.setattr(recipe, "GPU_THROUGHPUT", 1e6)  # a GPU so slow that 60 images take hours
    resolved, decisions = _decided(RunConfig(), folder, pretrained=True, on_gpu=True)
    assert resolved.optim.freeze == "backbone"
    assert "pretrained weights on a GPU" in decisions["optim.freeze"].reason


def test_a_given_value_always_wins(tmp_path: Path) -> None:
    folder = make_image_folder(tmp_path / "photos", per_class=20, size=96)
    given = merge(RunConfig(), {"data": {"augment": "trivial"}, "optim": {"lr": 0.01, "freeze": "none", "ema": "off"},
                                "trainer": {"epochs": 3}})
    resolved, decisions = _decided(given, folder, pretrained=True)
    assert (resolved.data.augment, resolved.optim.lr, resolved.optim.freeze, resolved.trainer.epochs) == \
        ("trivial", 0.01, "none", 3)
    assert set(decisions) == {"optim.backbone_lr_mult", "optim.bn_stats"}
    assert resolved.optim.backbone_lr_mult == 0.1
    # The backbone moves 10× slower than the head: its BatchNorm statistics stay those it was trained with.
    assert resolved.optim.bn_stats == "frozen"
    assert "do not shift when the backbone unfreezes" in decisions["optim.bn_stats"].reason
    everything = merge(given, {"optim": {"backbone_lr_mult": 1.0, "bn_stats": "batch"}})
    assert _decided(everything, folder, pretrained=True) == (everything, {})


def mnist_like_folder(root: Path, per_class: int = 10) -> Path:
    """scikit-learn's 8 px digits drawn at 28 px, grey ink on black (MNIST's look)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    for index, (pixels, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        if len(list(folder.iterdir())) < per_class:
            Image.fromarray((pixels * 255 / 16).astype(np.uint8)).resize((28, 28)).save(folder / f"{index}.png")
    return root


def test_small_glyphs_on_a_pretrained_network_train_near_their_size_with_a_full_fine_tune(tmp_path: Path) -> None:
    config = merge(RunConfig(), {"model": {"arch": "efficientnet_lite0"}})
    resolved, decisions = _decided(config, mnist_like_folder(tmp_path / "digits"), pretrained=True)
    # 28 px against the network's 224: at 1.5× the 32 px it needs at least (0.4-0.5% test error there, 1.7-2.5% at
    # 32 px), not upsampled 8×.
    assert resolved.data.image_size == 48
    assert "far below efficientnet_lite0's 224 px" in decisions["data.image_size"].reason
    assert "trained at 48 px (1.5× the 32 px it takes at least" in decisions["data.image_size"].reason
    assert (resolved.optim.freeze, resolved.optim.unfreeze_epoch, resolved.optim.backbone_lr_mult) == \
        ("until-epoch", 1, 1.0)
    # At one rate the statistics follow the batches (frozen, the backbone's training diverged).
    assert resolved.optim.bn_stats == "batch"
    assert "glyph-like images, unlike the photos" in decisions["optim.freeze"].reason
    assert "is estimated at" in decisions["optim.freeze"].reason
    # Shifts help small_cnn from scratch; on the few epochs of a fine-tune they were not shown to (1.98% against 1.73%).
    assert resolved.data.augment == "none"
    assert "the few epochs of a fine-tune" in decisions["data.augment"].reason
    assert isinstance(resolved.optim.ema, float)
    assert 0.9 <= resolved.optim.ema < 1


def test_ema_is_on_where_the_backbone_trains_and_off_for_a_head_on_cached_features(tmp_path: Path) -> None:
    folder = make_image_folder(tmp_path / "photos", per_class=20, size=96)
    probe, decisions = _decided(RunConfig(), folder, pretrained=True)
    assert probe.optim.freeze == "backbone"
    assert probe.optim.ema == "off"
    scratch, decisions = _decided(merge(RunConfig(), {"model": {"weights": "none"}}), folder, pretrained=False)
    # 42 training images, 2 steps an epoch, 30 epochs: 60 steps, an average over the last 6 (the lowest decay).
    assert scratch.optim.ema == 0.9
    assert "60 steps" in decisions["optim.ema"].reason


@pytest.mark.parametrize("flag", [["--augment", "none"], []])
def test_finetune_prints_each_choice_with_its_reason(
    image_folder: Path, tmp_path: Path, capsys, flag: list[str]
) -> None:
    from zoo_cli.main import main

    argv = ["finetune", "--arch", "small_cnn", "--data", str(image_folder), "--weights", "none", "--epochs", "1",
            "--max-steps", "2", "--out", str(tmp_path / "run"), *flag]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert ("zoo: data.augment:" in printed) == (not flag)
    assert "zoo: optim.lr: 0.003 (random weights" in printed
    assert "trainer.epochs" not in printed, "a given value is not chosen again"


def test_an_entry_without_pretrained_weights_records_none_not_default(image_folder: Path, capsys) -> None:
    from finetune.training.setup import choose_settings

    config = merge(RunConfig(), {"model": {"arch": "small_cnn"}, "data": {"path": str(image_folder)}})
    assert config.model.weights == "default"
    chosen = choose_settings(config, split_folder(image_folder))
    assert chosen.model.weights == "none"
    assert chosen.optim.freeze == "none"
    assert "model.weights: none (small_cnn has no pretrained weights" in capsys.readouterr().out
