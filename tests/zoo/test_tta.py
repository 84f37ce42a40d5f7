"""Test-time augmentation: the views it averages over, and its refusals."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from zoo.errors import ZooError
from zoo.tta import check_tta
from zoo.tta_network import TtaNetwork, views


def test_flip_averages_the_logits_of_the_image_and_its_mirror() -> None:
    torch.manual_seed(0)
    network = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(5)).eval()
    batch = torch.randn(2, 3, 16, 16)
    expected = (network(batch) + network(batch.flip(-1))) / 2
    assert torch.allclose(TtaNetwork(network, "flip")(batch), expected)
    assert torch.equal(TtaNetwork(network, "none")(batch), network(batch))


def test_flip_crop_adds_four_corner_crops_at_the_input_size() -> None:
    batch = torch.arange(2 * 3 * 20 * 20, dtype=torch.float32).reshape(2, 3, 20, 20)
    seen = views(batch, "flip-crop")
    assert len(seen) == 6
    assert all(view.shape == batch.shape for view in seen)
    assert torch.equal(seen[1], batch.flip(-1)), "different corners"
    assert not torch.equal(seen[2], seen[5]), "different corners"


def test_an_unknown_mode_or_a_mirror_on_a_model_whose_classes_change_is_one_line() -> None:
    with pytest.raises(ZooError, match="--tta must be one of none, flip, flip-crop, got 'mirror'"):
        check_tta("mirror")
    with pytest.raises(ZooError, match="classes change under a mirror"):
        check_tta("flip", flips_change_class=True)
    assert check_tta("none", flips_change_class=True) == "none"
