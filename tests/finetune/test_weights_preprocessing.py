"""A run's preprocessing comes from the weights it starts from; networks with several heads or a conv head train."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import zoo
from finetune.config import ConfigError, RunConfig, merge
from finetune.data.split import split_folder
from finetune.inspection.clean import backbone_features
from finetune.training.module import Classifier, FeatureProbe
from finetune.training.run import train
from finetune.training.setup import build_classifier, prepare, preprocessing_of
from tests.helpers import run_summary
from zoo.spec import IMAGENET_MEAN, IMAGENET_STD

RESNET50_V2_FILE = "resnet50-11ad3fa6.pth"  # torchvision's file name of IMAGENET1K_V2, its default


@pytest.fixture
def placed_resnet50(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, torch.Tensor]:
    """resnet50's default weights file, made here and placed where torchvision's cache keeps it."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    torch.manual_seed(11)
    reference = zoo.get_spec("resnet50").build().state_dict()
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(reference, folder / RESNET50_V2_FILE)
    info = next(info for info in zoo.get_spec("resnet50").weights.available() if info.tag == "IMAGENET1K_V2")
    assert info.cached
    assert info.path.name == RESNET50_V2_FILE
    return reference


def _config(images: Path, out: Path, arch: str, weights: str, **data: object) -> RunConfig:
    return merge(RunConfig(), {
        "data": {"path": str(images), "batch_size": 8, "augment": "none", "num_workers": 0, "cache": "none", **data},
        "model": {"arch": arch, "weights": weights},
        "optim": {"lr": 1e-3, "backbone_lr_mult": 0.1},
        "trainer": {"epochs": 1, "max_steps": 1, "seed": 0, "accelerator": "cpu"},
        "out": str(out),
    })


def test_a_run_from_resnet50s_default_weights_resizes_to_232(placed_resnet50, image_folder: Path,
                                                               tmp_path: Path) -> None:
    split = split_folder(image_folder)
    setup = prepare(_config(image_folder, tmp_path / "run", "resnet50", "default"), split)
    metadata = setup.module.metadata
    assert metadata is not None
    assert metadata.weights == "IMAGENET1K_V2"
    preprocessing = metadata.preprocessing
    assert (preprocessing.crop, preprocessing.resize, preprocessing.interpolation) == (224, 232, "bilinear")
    assert (preprocessing.mean, preprocessing.std) == (IMAGENET_MEAN, IMAGENET_STD)
    assert "Resize(size=[232]" in repr(setup.data.transforms["val"])
    assert setup.data.preprocessing.resize == 232
    # From scratch the entry's own 224 / 0.875 = 256.
    scratch = prepare(_config(image_folder, tmp_path / "run", "resnet50", "none"), split).module.metadata
    assert scratch is not None
    assert (scratch.image_size, scratch.preprocessing.resize) == (224, 256)


def test_image_size_scales_the_weights_resize_into_the_checkpoint(placed_resnet50, image_folder: Path,
                                                                   tmp_path: Path) -> None:
    out = tmp_path / "run"
    # ⌊32 × 232 / 224⌋ = ⌊33.14⌋ = 33 (the entry's own would be ⌊32 / 0.875⌋ = 36).
    run_dir = train(_config(image_folder, out, "resnet50", "default", image_size=32)).run_dir
    checkpoint = torch.load(run_dir / "best.ckpt", map_location="cpu", weights_only=True)
    assert (checkpoint["zoo"]["preprocessing"]["crop"], checkpoint["zoo"]["preprocessing"]["resize"]) == (32, 33)
    assert checkpoint["zoo"]["weights"] == "IMAGENET1K_V2"
    assert run_summary(run_dir)["steps"] == 1


def test_resnet18s_default_weights_resize_to_256(image_folder: Path, tmp_path: Path) -> None:
    preprocessing = preprocessing_of(_config(image_folder, tmp_path, "resnet18", "default"), zoo.get_spec("resnet18"))
    assert (preprocessing.crop, preprocessing.resize) == (224, 256)


def test_a_fixed_input_size_is_one_line_before_any_work(image_folder: Path, tmp_path: Path) -> None:
    spec = zoo.get_spec("timm/deit_tiny_distilled_patch16_224")  # a position embedding for 14 x 14 patches only
    assert spec.fixed_input_size
    assert spec.input_size == 224
    with pytest.raises(ConfigError, match=r"takes images of 224 px only .*: leave out --image-size or pass 224 "
                                          r"\(got 128\)"):
        preprocessing_of(_config(image_folder, tmp_path, spec.name, "none", image_size=128), spec)
    assert preprocessing_of(_config(image_folder, tmp_path, spec.name, "none"), spec).crop == 224


def test_distilled_deit_trains_both_heads_by_full_forward_passes(image_folder: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    spec = zoo.get_spec("timm/deit_tiny_distilled_patch16_224")
    config = _config(image_folder, tmp_path, spec.name, "none", cache="auto")
    config = merge(config, {"optim": {"freeze": "backbone"}})
    split = split_folder(image_folder)
    module, _ = build_classifier(config, spec, split, preprocessing_of(config, spec))
    assert type(module) is Classifier
    assert not isinstance(module, FeatureProbe)
    assert "combines 2 classifiers (head, head_dist)" in capsys.readouterr().out
    heads = [module.network.get_submodule(path).linear for path in ("head", "head_dist")]
    assert {id(p) for p in module.head_parameters()} == {id(p) for h in heads for p in h.parameters()}


def test_bit_conv_head_trains_as_a_linear_probe_on_cached_features(image_folder: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    config = merge(_config(image_folder, tmp_path / "bit", "timm/resnetv2_50x1_bit", "none", cache="memory",
                           image_size=32), {"optim": {"freeze": "backbone"}, "trainer": {"max_steps": 2}})
    run_dir = train(config).run_dir
    assert "backbone features kept in memory" in capsys.readouterr().out  # the head's N×2048×1×1 inputs
    summary = run_summary(run_dir)
    assert summary["steps"] == 2
    assert summary["test_top1_error"] is not None
    state = torch.load(run_dir / "best.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    assert state["network.head.fc.linear.weight"].shape == (3, 2048, 1, 1)


def test_zoo_clean_refuses_a_network_with_two_heads_in_one_line() -> None:
    with pytest.raises(zoo.ZooError, match=r"combines 2 \(head, head_dist\).*choose another --arch") as caught:
        backbone_features([], "timm/deit_tiny_distilled_patch16_224", None, 8)
    assert "\n" not in str(caught.value)
