"""Pretrained weights: the torchvision cache, local files, the offline message, wrong files."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import zoo


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub" / "checkpoints"


def _reference_state_dict(name: str) -> dict[str, torch.Tensor]:
    torch.manual_seed(123)
    return zoo.get_spec(name).build().state_dict()


def _backbone_equal(model: torch.nn.Module, reference: dict[str, torch.Tensor], head: str) -> None:
    loaded = model.state_dict()
    backbone = [k for k in reference if not k.startswith(head + ".")]
    assert backbone
    assert all(torch.equal(loaded[k], reference[k]) for k in backbone)


def test_default_weights_load_from_the_torch_home_cache(torch_home: Path) -> None:
    info = next(i for i in zoo.get_spec("resnet18").weights.available() if i.tag == "IMAGENET1K_V1")
    assert info.path == torch_home / "resnet18-f37072fd.pth"
    assert not info.cached
    reference = _reference_state_dict("resnet18")
    torch_home.mkdir(parents=True)
    torch.save(reference, info.path)
    assert zoo.summarize(zoo.get_spec("resnet18"))["weights_cached"] is True
    model = zoo.create_model("resnet18", num_classes=3, weights="default")
    _backbone_equal(model, reference, "fc")
    assert model.fc.linear.out_features == 3


def test_googlenet_weights_with_aux_heads_load(torch_home: Path) -> None:
    from torchvision.models import googlenet

    torch.manual_seed(1)
    published = googlenet(weights=None, aux_logits=True, init_weights=True).state_dict()
    assert any(k.startswith("aux1.") for k in published)
    torch_home.mkdir(parents=True)
    torch.save(published, torch_home / "googlenet-1378be20.pth")
    model = zoo.create_model("googlenet", num_classes=2, weights="IMAGENET1K_V1")
    _backbone_equal(model, {k: v for k, v in published.items() if not k.startswith("aux")}, "fc")


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_local_weight_files(tmp_path: Path, suffix: str) -> None:
    reference = _reference_state_dict("small_cnn")
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        save_file(reference, str(path))
    else:
        torch.save({"state_dict": reference}, path)
    model = zoo.create_model("small_cnn", num_classes=7, weights=str(path))
    _backbone_equal(model, reference, "classifier")


def test_missing_weights_offline_name_file_folder_url_and_fallback(torch_home: Path, monkeypatch) -> None:
    monkeypatch.delenv("ZOO_OFFLINE", raising=False)

    def unreachable(*args, **kwargs):  # the machine is offline, as this one is; never hang
        raise OSError("Name or service not known")

    monkeypatch.setattr("socket.create_connection", unreachable)
    started = time.monotonic()
    with pytest.raises(zoo.WeightsError) as error:
        zoo.create_model("resnet50", num_classes=3, weights="default")
    assert time.monotonic() - started < 30
    message = str(error.value)
    assert "\n" not in message
    for part in ("resnet50-11ad3fa6.pth", str(torch_home), "https://download.pytorch.org/models/resnet50-11ad3fa6.pth",
                 "--weights none"):
        assert part in message


def test_wrong_weight_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "other.pth"
    torch.save(_reference_state_dict("small_cnn"), path)
    with pytest.raises(zoo.WeightsError, match=r"do not fit resnet18.*missing"):
        zoo.create_model("resnet18", num_classes=3, weights=str(path))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(zoo.WeightsError, match="cannot read weights file"):
        zoo.create_model("resnet18", num_classes=3, weights=str(tmp_path / "junk.pth"))
    with pytest.raises(zoo.WeightsError, match="no weights tagged 'V9'"):
        zoo.create_model("resnet18", num_classes=3, weights="V9")
