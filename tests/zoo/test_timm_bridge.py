"""The timm bridge against timm itself: its default tags, data configs, heads and the Hugging Face cache."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import zoo
from zoo.spec import Preprocessing
from zoo_cli.main import main

BIT = "timm/resnetv2_50x1_bit"
DEIT = "timm/deit_tiny_distilled_patch16_224"


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face hub cache of this test."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-hub"))
    return tmp_path / "hf-hub"


def _place_in_hub_cache(cache: Path, repo: str, state_dict: dict[str, torch.Tensor]) -> Path:
    """``model.safetensors`` laid out as huggingface_hub leaves a download: refs/main names the snapshot."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    revision = "0123456789abcdef0123456789abcdef01234567"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(revision)
    path = folder / "snapshots" / revision / "model.safetensors"
    path.parent.mkdir(parents=True)
    save_file({key: tensor.contiguous() for key, tensor in state_dict.items()}, str(path))
    return path


@pytest.mark.parametrize(("name", "tag"), [("convnext_tiny", "in12k_ft_in1k"), ("efficientnet_b0", "ra_in1k")])
def test_default_tag_is_timms(name: str, tag: str) -> None:
    import timm

    weights = zoo.get_spec(f"timm/{name}").weights
    assert weights is not None
    assert weights.default_tag == timm.models.get_pretrained_cfg(name).tag == tag
    # Not the first tag in alphabetical order (dinov3_lvd1689m, ra4_e3600_r224_in1k), which zoo used to take.
    assert sorted(info.tag for info in weights.available())[0] != tag


def test_a_tag_in_the_name_is_the_default() -> None:
    weights = zoo.get_spec("timm/convnext_tiny.fb_in1k").weights
    assert weights is not None
    assert weights.default_tag == "fb_in1k"


def test_preprocessing_of_each_tag_is_timms_data_config() -> None:
    spec = zoo.get_spec("timm/convnext_tiny")
    assert spec.weights is not None
    by_tag = {info.tag: info.preprocessing for info in spec.weights.available()}
    # in12k_ft_in1k: crop_pct 0.95 → resize ⌊224 / 0.95⌋ = ⌊235.79⌋ = 235; fb_in1k: ⌊224 / 0.875⌋ = 256.
    assert by_tag["in12k_ft_in1k"] == Preprocessing(224, 235, "bicubic", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225),
                                                    0.95)
    # Another crop as timm computes it from crop_pct: ⌊288 / 0.95⌋ = 303 (scaling the rounded 235 would give 302).
    assert by_tag["in12k_ft_in1k"].at(288).resize == 303
    assert (by_tag["fb_in1k"].crop, by_tag["fb_in1k"].resize) == (224, 256)
    assert (by_tag["in12k_ft_in1k_384"].crop, by_tag["in12k_ft_in1k_384"].resize) == (384, 384)  # crop_pct 1.0
    # The entry's own settings (from scratch) are its default tag's; BiT's mean and std are 0.5.
    assert spec.preprocessing == by_tag["in12k_ft_in1k"]
    assert spec.input_size == 224
    assert spec.crop_fraction == 0.95
    bit = zoo.get_spec(BIT).preprocessing
    assert (bit.mean, bit.std, bit.resize) == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5), math.floor(224 / 0.875))


def test_zoo_info_shows_timms_default_weights_and_their_preprocessing(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "timm/convnext_tiny", "--format", "json"]) == 0
    details = json.loads(capsys.readouterr().out)
    assert details["default_weights"] == "in12k_ft_in1k"
    assert details["preprocessing"] == {"weights": "in12k_ft_in1k", "resize": 235, "crop": 224,
                                        "interpolation": "bicubic", "mean": [0.485, 0.456, 0.406],
                                        "std": [0.229, 0.224, 0.225]}
    assert main(["info", "timm/convnext_tiny"]) == 0
    table = capsys.readouterr().out
    assert "in12k_ft_in1k" in table
    assert "resize the shorter side to 235 px (bicubic), centre crop 224" in table


def test_distilled_deit_names_both_heads() -> None:
    spec = zoo.get_spec(DEIT)
    assert spec.heads == ("head", "head_dist")
    assert spec.head == "head"
    assert zoo.describe(spec)["heads"] == ["head", "head_dist"]


def _one_step(model: nn.Module, size: int, num_classes: int) -> float:
    """One SGD step on random images; returns the loss."""
    torch.manual_seed(0)
    images, labels = torch.randn(2, 3, size, size), torch.tensor([0, num_classes - 1])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    loss = nn.functional.cross_entropy(model(images), labels)
    loss.backward()
    optimizer.step()
    return loss.item()


def test_bit_conv_head_is_replaced_through_timm_and_trains() -> None:
    model = zoo.create_model(BIT, num_classes=4, dropout=0.3)
    head = model.get_submodule("head.fc")
    assert isinstance(head, zoo.ClassifierHead)
    assert head.dropout.p == 0.3
    assert isinstance(head.linear, nn.Conv2d)
    assert (head.linear.in_channels, head.linear.out_channels) == (2048, 4)
    assert head.linear.kernel_size == (1, 1)
    assert model.num_classes == 4
    before = head.linear.weight.detach().clone()
    loss = _one_step(model, 64, 4)
    assert math.isfinite(loss)
    assert not torch.equal(head.linear.weight, before)
    assert model.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 4)


def test_distilled_deit_gets_two_new_heads_and_trains() -> None:
    model = zoo.create_model(DEIT, num_classes=5)
    heads = [model.get_submodule(path) for path in ("head", "head_dist")]
    assert all(isinstance(h, zoo.ClassifierHead) and isinstance(h.linear, nn.Linear) for h in heads)
    assert [(h.linear.in_features, h.linear.out_features) for h in heads] == [(192, 5), (192, 5)]
    before = [h.linear.weight.detach().clone() for h in heads]
    loss = _one_step(model, 224, 5)  # its position embedding is fixed at 224 px
    assert math.isfinite(loss)
    assert all(not torch.equal(h.linear.weight, b) for h, b in zip(heads, before, strict=True))


def test_weights_in_the_hub_cache_are_found_offline_and_load(hub_cache: Path) -> None:
    import timm

    torch.manual_seed(3)
    published = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False).state_dict()
    repo = timm.models.get_pretrained_cfg("deit_tiny_distilled_patch16_224").hf_hub_id
    info = zoo.get_spec(DEIT).weights.available()[0]
    assert not info.cached
    assert info.path == hub_cache / f"models--{repo.replace('/', '--')}" / "snapshots" / "main" / "model.safetensors"
    placed = _place_in_hub_cache(hub_cache, repo, published)
    info = zoo.get_spec(DEIT).weights.available()[0]
    assert info.cached
    assert info.path == placed
    assert zoo.summarize(zoo.get_spec(DEIT))["weights_cached"] is True
    model = zoo.create_model(DEIT, num_classes=3, weights="default")
    loaded = model.state_dict()
    backbone = [key for key in published if not key.startswith(("head.", "head_dist."))]
    assert backbone
    assert all(torch.equal(loaded[key], published[key]) for key in backbone)
    assert loaded["head_dist.linear.weight"].shape == (3, 192)


def test_a_file_saved_by_hand_as_the_main_snapshot_is_found(hub_cache: Path) -> None:
    info = zoo.get_spec("timm/resnet10t").weights.available()[0]
    torch.manual_seed(4)
    published = zoo.get_spec("timm/resnet10t").build().state_dict()
    info.path.parent.mkdir(parents=True)
    save_file(published, str(info.path))
    model = zoo.create_model("timm/resnet10t", num_classes=2, weights="default")
    assert torch.equal(model.state_dict()["conv1.0.weight"], published["conv1.0.weight"])


def test_missing_hub_weights_offline_name_the_folder_and_url(hub_cache: Path) -> None:
    with pytest.raises(zoo.WeightsError) as caught:
        zoo.create_model("timm/resnet10t", num_classes=2, weights="default")
    message = str(caught.value)
    assert "\n" not in message
    assert "timm/resnet10t:c3_in1k" in message
    assert "https://huggingface.co/timm/resnet10t.c3_in1k/resolve/main/model.safetensors" in message
    assert str(hub_cache / "models--timm--resnet10t.c3_in1k" / "snapshots" / "main") in message
    assert "--weights none" in message


def test_weights_whose_two_heads_have_another_width_load_into_the_backbone(tmp_path: Path) -> None:
    import timm

    torch.manual_seed(5)
    other_task = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False, num_classes=10).state_dict()
    path = tmp_path / "deit-10-classes.safetensors"
    save_file(other_task, str(path))
    model = zoo.create_model(DEIT, num_classes=3, weights=str(path))
    assert torch.equal(model.state_dict()["cls_token"], other_task["cls_token"])


def test_a_default_that_is_not_on_the_hub_still_lists_the_tags_that_are(monkeypatch: pytest.MonkeyPatch,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from zoo.weights.installing import weight_files
    from zoo.weights.timm_hub import TimmWeights

    def missing(self: TimmWeights) -> str:
        raise zoo.WeightsError(f"timm's default weights of timm/{self.model_name} are not on the Hugging Face hub")

    monkeypatch.setattr(TimmWeights, "default_tag", property(missing))
    spec = zoo.get_spec("timm/resnet10t")
    assert zoo.describe(spec)["default_weights"] is None  # zoo info shows the entry, without a default
    assert {row.tag for row in weight_files("timm/resnet10t", "all")} == {info.tag for info in spec.weights.available()}
    assert main(["weights", "timm/resnet10t"]) == 2  # the default itself is the one-line refusal
    assert "not on the Hugging Face hub" in capsys.readouterr().err


def test_the_hub_cache_follows_hf_home_set_after_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from zoo.weights.timm_hub import hub_cache

    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert hub_cache() == tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    assert hub_cache() == tmp_path / "hub-cache"
