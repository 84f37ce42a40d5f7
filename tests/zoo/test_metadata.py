"""zoo/metadata.json, what the registry commands show without importing torch, is what the real models give."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from zoo import metadata
from zoo.catalog import CLASSIC
from zoo.weights.source import HASH_PATTERN
from zoo.weights.torchvision_hub import TorchvisionWeights, torch_hub_checkpoints


def test_the_file_was_made_with_the_installed_versions() -> None:
    assert metadata.stored(), f"{metadata.FILE} is for other versions of torch / torchvision / timm: " \
                              "run python -m zoo.metadata"
    assert set(metadata.stored()) == {spec.name for spec in CLASSIC}


@pytest.mark.parametrize("spec", [spec for spec in CLASSIC if isinstance(spec.weights, TorchvisionWeights)],
                         ids=lambda spec: spec.name)
def test_stored_weights_metadata_is_torchvisions(spec) -> None:
    # As text: torchvision gives NaN errors for weights never measured on ImageNet (VGG-16's features), and NaN != NaN.
    assert repr(spec.weights.available()) == repr(spec.weights.measured())
    assert spec.weights.default_tag == spec.weights.stored_metadata()["default"]


@pytest.mark.slow  # builds every classic network on the meta device and counts its FLOPs
def test_stored_figures_are_measured_from_the_models() -> None:
    measured = metadata.measure_all()
    assert measured == {"versions": metadata.versions(), "entries": metadata.stored()}, \
        "run python -m zoo.metadata to measure the figures again"


def test_torch_hub_folder_and_hash_pattern_are_torchs(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert HASH_PATTERN.pattern == torch.hub.HASH_REGEX.pattern
    for variables in ({"TORCH_HOME": str(tmp_path / "home")}, {"XDG_CACHE_HOME": str(tmp_path / "xdg")}, {}):
        for name in ("TORCH_HOME", "XDG_CACHE_HOME"):
            monkeypatch.delenv(name, raising=False)
        for name, value in variables.items():
            monkeypatch.setenv(name, value)
        assert torch_hub_checkpoints() == Path(torch.hub.get_dir()) / "checkpoints"
