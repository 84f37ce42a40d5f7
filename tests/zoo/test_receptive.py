"""Receptive-field rules on small networks of plain torch.nn, against fields worked by hand.

Each unit ``o`` of a map sees input pixels ``lo[o]..hi[o]`` on the padded plane; its field is ``hi - lo + 1``, its
centre ``(lo + hi) / 2``, and ``jump`` is the spacing of the units in input pixels (Araujo et al., Distill 2019:
``r_out = r_in + (k - 1)·d·j_in``, ``j_out = j_in·s``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from zoo.receptive import Field, FieldTracer, Unknown, image_field
from zoo.receptive.fields import FLAT, MAP, WHOLE, Axis


def _trace(network: nn.Module, size: int) -> Field | Unknown:
    image = torch.zeros(1, 3, size, size)
    with torch.no_grad(), FieldTracer() as tracer:
        tracer.mark(image, image_field(size, size))
        output = network.eval()(image)
    field = tracer.field(output)
    assert field is not None
    return field


def _map(network: nn.Module, size: int) -> tuple[Axis, Axis]:
    field = _trace(network, size)
    assert isinstance(field, Field), field
    assert field.kind == MAP, field
    return field.axes


def _assert_axis(axis: Axis, lo: list[int] | np.ndarray, hi: list[int] | np.ndarray, jump: int | None) -> None:
    assert (axis.lo.tolist(), axis.hi.tolist(), axis.jump) == (list(lo), list(hi), jump)


class _ChannelsLastNorm(nn.Module):
    """ConvNeXt's LayerNorm2d: normalise each unit's channels, channels-last."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class _ConvNeXtBlock(nn.Module):
    """Depthwise 7×7, then LayerNorm and an MLP applied channels-last at every unit, then the residual sum."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, 7, padding=3, groups=channels)
        self.norm = nn.LayerNorm(channels)
        self.mlp = nn.Sequential(nn.Linear(channels, 4 * channels), nn.GELU(), nn.Linear(4 * channels, channels))

    def forward(self, x: Tensor) -> Tensor:
        y = self.mlp(self.norm(self.depthwise(x).permute(0, 2, 3, 1)))
        return x + y.permute(0, 3, 1, 2)


def _convnext(stages: int) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(3, 8, 4, stride=4), _ChannelsLastNorm(8), _ConvNeXtBlock(8)]
    if stages == 2:
        layers += [_ChannelsLastNorm(8), nn.Conv2d(8, 8, 2, stride=2), _ConvNeXtBlock(8)]
    return nn.Sequential(*layers)


def test_convnext_patchify_stem_depthwise_7x7_and_channels_last_mlp() -> None:
    # Stem 4×4 stride 4: unit o sees 4o..4o+3. Depthwise 7×7 (padding 3) over units o-3..o+3: 4o-12..4o+15, a
    # field of 4 + 6·4 = 28 px centred on 4o + 1.5; the LayerNorms (channels only), the MLP and the residual sum
    # keep it.
    units = np.arange(8)
    for axis in _map(_convnext(1), 32):
        _assert_axis(axis, 4 * units - 12, 4 * units + 15, 4)
        assert ((axis.lo + axis.hi) / 2).tolist() == (4 * units + 1.5).tolist()


def test_convnext_downsampling_then_a_second_block() -> None:
    # 2×2 stride 2 over block units 2o, 2o+1: 8o-12..8o+19 (32 px, jump 8); the second block's 7×7 over units
    # o-3..o+3 adds 6·8: 8o-36..8o+43, 80 px centred on 8o + 3.5.
    units = np.arange(4)
    for axis in _map(_convnext(2), 32):
        _assert_axis(axis, 8 * units - 36, 8 * units + 43, 8)
    assert Field(MAP, (-2, -1), _map(_convnext(2), 32)).size == (80, 80)


def test_a_layer_norm_over_the_map_spreads_every_unit_over_all() -> None:
    # LayerNorm([C, H, W]) normalises with statistics of the whole map: each unit sees every pixel any unit sees.
    network = nn.Sequential(nn.Conv2d(3, 4, 4, stride=4), nn.LayerNorm([4, 4, 4]))
    for axis in _map(network, 16):
        _assert_axis(axis, [0] * 4, [15] * 4, 4)


class _Tokens(nn.Module):
    """A ViT without a class token: 8×8 patches, flattened into tokens channels-last, each through an MLP."""

    def __init__(self, attention: bool = False, class_token: bool = False) -> None:
        super().__init__()
        self.patches = nn.Conv2d(3, 16, 8, stride=8)
        self.norm = nn.LayerNorm(16)
        self.mlp = nn.Linear(16, 16)
        self.attention = nn.MultiheadAttention(16, 2, batch_first=True) if attention else None
        self.class_token = nn.Parameter(torch.zeros(1, 1, 16)) if class_token else None

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.patches(x).flatten(2).transpose(1, 2)  # N × tokens × C
        if self.class_token is not None:
            tokens = torch.cat([self.class_token.expand(len(x), -1, -1), tokens], dim=1)
        tokens = tokens + self.mlp(self.norm(tokens))
        if self.attention is not None:
            tokens = tokens + self.attention(tokens, tokens, tokens, need_weights=False)[0]
        return tokens


def test_vit_tokens_keep_their_patch_as_field_through_flatten_norm_and_mlp() -> None:
    field = _trace(_Tokens(), 32)
    # A 32 px image in 8×8 patches: 4×4 tokens, token (i, j) sees its own patch, 8 apart.
    assert isinstance(field, Field)
    assert (field.kind, field.dims) == (FLAT, (-2,))
    units = np.arange(4)
    for axis in field.axes:
        _assert_axis(axis, 8 * units, 8 * units + 7, 8)


def test_vit_mean_of_the_tokens_sees_the_whole_image() -> None:
    field = _trace(nn.Sequential(_Tokens(), _MeanTokens(), nn.Linear(16, 10)), 32)
    assert isinstance(field, Field)
    assert field.kind == WHOLE
    assert field.size == (32, 32)


class _MeanTokens(nn.Module):
    def forward(self, tokens: Tensor) -> Tensor:
        return tokens.mean(dim=1)


@pytest.mark.parametrize(("network", "reason"), [
    # Attention mixes tokens by a product of the tokens with each other: where spatial structure ends, the rules
    # give no number rather than a guess, and say which operation they stopped at.
    (_Tokens(attention=True), "no receptive-field rule for"),
    # A class token joined to the patch tokens: a token axis that is no longer the map's units.
    (_Tokens(class_token=True), "a split or concatenation along a spatial dim (cat)"),
])
def test_where_spatial_structure_ends_the_field_is_unknown_with_its_reason(network: nn.Module, reason: str) -> None:
    field = _trace(network, 32)
    assert isinstance(field, Unknown)
    assert reason in field.reason


def test_average_pools_with_and_without_padding() -> None:
    network = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AvgPool2d(2), nn.Conv2d(4, 4, 3, padding=1),
                            nn.AvgPool2d(3, stride=2, padding=1))
    # conv 3: o-1..o+1; pool 2: 2o-1..2o+2 (jump 2); conv 3: 2o-3..2o+4; pool 3 stride 2 padding 1 over units
    # 2o-1..2o+1: 4o-5..4o+6, 1 + 2 + 1 + 2·2 + 2·2 = 12 px centred on 4o + 0.5, jump 4.
    units = np.arange(4)
    for axis in _map(network, 16):
        _assert_axis(axis, 4 * units - 5, 4 * units + 6, 4)


def test_reflection_padding_reads_pixels_inside_the_image() -> None:
    # Reflecting by 2 then a 5×5 window: interior units see o-2..o+2; a border unit's window folds back onto
    # the image, so unit 0 sees pixels 0..2 only.
    network = nn.Sequential(nn.ReflectionPad2d(2), nn.Conv2d(3, 4, 5))
    for axis in _map(network, 8):
        _assert_axis(axis, [0, 0, 0, 1, 2, 3, 4, 5], [2, 3, 4, 5, 6, 7, 7, 7], 1)


def test_a_padded_strided_conv_after_reflection_padding() -> None:
    # CycleGAN's generator: reflect 3, 7×7, then a 3×3 stride-2 conv with zero padding 1. The reflected units
    # stay one pixel apart, so the zero padding extends the map by that spacing.
    network = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(3, 4, 7), nn.Conv2d(4, 4, 3, stride=2, padding=1))
    # After the 7×7: lo = max(o-3, 0), hi = min(o+3, 15). Unit o of the stride-2 conv sees units 2o-1..2o+1; unit 0
    # reaches the padding unit -1, one pixel before unit 0: lo -1.
    units = np.arange(8)
    lo, hi = np.maximum(2 * units - 4, 0), np.minimum(2 * units + 4, 15)
    lo[0] = -1
    for axis in _map(network, 16):
        _assert_axis(axis, lo, hi, 2)


def test_replication_padding_repeats_the_edge_units() -> None:
    network = nn.Sequential(nn.ReplicationPad2d(1), nn.Conv2d(3, 4, 3))
    for axis in _map(network, 6):
        _assert_axis(axis, [0, 0, 1, 2, 3, 4], [1, 2, 3, 4, 5, 5], 1)


def test_dilated_convolutions_and_a_dilated_max_pool() -> None:
    network = nn.Sequential(nn.Conv2d(3, 4, 3, dilation=2, padding=2), nn.Conv2d(4, 4, 3, dilation=4, padding=4),
                            nn.MaxPool2d(3, stride=2, padding=1, dilation=2))
    # dilation 2: o-2..o+2 (5 px); dilation 4 over units o-4, o, o+4: o-6..o+6 (13 px); the pool over units
    # 2o-1, 2o+1, 2o+3: 2o-7..2o+9, 1 + 4 + 8 + 4 = 17 px centred on 2o + 1, jump 2.
    units = np.arange(7)
    field = _trace(network, 16)
    assert isinstance(field, Field)
    assert field.size == (17, 17)
    for axis in field.axes:
        _assert_axis(axis, 2 * units - 7, 2 * units + 9, 2)
        assert ((axis.lo + axis.hi) / 2).tolist() == (2 * units + 1).tolist()


def test_a_strided_slice_keeps_every_other_unit() -> None:
    class _EveryOther(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return nn.functional.conv2d(x, torch.ones(1, 3, 3, 3), padding=1)[..., ::2, 1::2]

    height, width = _map(_EveryOther(), 8)
    _assert_axis(height, [-1, 1, 3, 5], [1, 3, 5, 7], 2)
    _assert_axis(width, [0, 2, 4, 6], [2, 4, 6, 8], 2)
