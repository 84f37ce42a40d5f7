"""The layer table: output sizes by formula checked against the forward pass, and receptive fields (Araujo et al.)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import zoo
from zoo.layers import LayerShapeError, layer_table, trace_layers
from zoo.profile import profile
from zoo_cli.main import main

# Worked by hand: output side floor((W + 2P - K) / S) + 1; receptive field r + (K - 1)·j, spacing j·S.
SMALL_CNN_28 = [  # name, output shape, receptive field
    ("features.0.0", (32, 28, 28), 3), ("features.0.1", (32, 28, 28), 3), ("features.0.2", (32, 14, 14), 4),
    ("features.1.0", (64, 14, 14), 8), ("features.1.1", (64, 14, 14), 8), ("features.1.2", (64, 7, 7), 10),
    ("features.2.0", (128, 7, 7), 18), ("features.2.1", (128, 7, 7), 18), ("features.2.2", (128, 3, 3), 22),
    # 3 → 4 adaptive windows: [0], [0, 1], [1, 2], [2]; two units 8 px apart: 22 + 8
    ("pool", (128, 4, 4), 30),
    ("fc.0", (2048,), 30),
    # a fully connected unit sees all 3 units of the last pool: from -7 to 14 + 2·8 = 30 on the padded plane
    ("fc.1", (625,), 38), ("fc.2", (625,), 38), ("fc.3", (625,), 38), ("classifier", (10,), 38),
]
ALEXNET_STAGES = {  # Araujo et al. (Distill 2019) give 195 px for AlexNet's last pool
    "features.0": ((64, 55, 55), 11), "features.2": ((64, 27, 27), 19), "features.3": ((192, 27, 27), 51),
    "features.5": ((192, 13, 13), 67), "features.6": ((384, 13, 13), 99), "features.8": ((256, 13, 13), 131),
    "features.10": ((256, 13, 13), 163), "features.12": ((256, 6, 6), 195),
    "classifier.1": ((4096,), 195 + 5 * 32), "classifier.6": ((1000,), 355),
}
VGG16_POOLS = {"features.4": 6, "features.9": 16, "features.16": 44, "features.23": 100, "features.30": 212}


def _rows(name: str, image_size: int | None = None) -> dict:
    return {row.name: row for row in layer_table(zoo.get_spec(name), image_size).rows}


def test_small_cnn_matches_the_hand_worked_table() -> None:
    rows = layer_table(zoo.get_spec("small_cnn")).rows
    assert [(row.name, row.output_shape, row.receptive_field) for row in rows] == [
        (name, shape, (field, field)) for name, shape, field in SMALL_CNN_28]
    conv = rows[0].to_dict()
    assert (conv["kernel"], conv["stride"], conv["padding"], conv["dilation"], conv["groups"]) == (
        [3, 3], [1, 1], [1, 1], [1, 1], 1)
    assert conv["params"] == 3 * 32 * 9 + 32
    assert conv["flops"] == 2 * 28 * 28 * 32 * 3 * 9


ALEXNET_SHAPES = [  # every layer in order: conv1 floor((224 + 4 - 11) / 4) + 1 = 55, pool1 (55 - 3) // 2 + 1 = 27 …
    (64, 55, 55), (64, 55, 55), (64, 27, 27), (192, 27, 27), (192, 27, 27), (192, 13, 13),
    (384, 13, 13), (384, 13, 13), (256, 13, 13), (256, 13, 13), (256, 13, 13), (256, 13, 13), (256, 6, 6),
    (256, 6, 6), (9216,), (4096,), (4096,), (4096,), (4096,), (4096,), (1000,),
]


def test_alexnet_sizes_and_receptive_fields_and_vgg16s_212_px() -> None:
    assert [row.output_shape for row in layer_table(zoo.get_spec("alexnet")).rows] == ALEXNET_SHAPES
    rows = _rows("alexnet")
    for name, (shape, field) in ALEXNET_STAGES.items():
        assert (rows[name].output_shape, rows[name].receptive_field) == (shape, (field, field)), name
    assert rows["features.0"].geometry.kernel == (11, 11)
    assert rows["features.0"].geometry.stride == (4, 4)
    vgg = _rows("vgg16")
    assert {name: vgg[name].receptive_field[0] for name in VGG16_POOLS} == VGG16_POOLS


def test_a_residual_join_takes_the_largest_field_of_its_paths() -> None:
    rows = _rows("resnet18")
    # layer2.0: the main path (two 3×3 convolutions) sees 67 px, the 1×1 shortcut 43; the block's sum sees both.
    assert rows["layer2.0.conv2"].receptive_field == (67, 67)
    assert rows["layer2.0.downsample.0"].receptive_field == (43, 43)
    assert rows["layer2.0.relu#2"].receptive_field == (67, 67)  # the ReLU after the sum: the block's second call
    assert rows["layer2.0.relu"].params == 0
    assert rows["layer4.1.conv2"].receptive_field == (435, 435)
    timm_rows = _rows("timm/resnet18")  # timm's ResNet-18 is the same network, written differently
    assert timm_rows["layer4.1.conv2"].receptive_field == (435, 435)


def test_timm_same_padding_is_the_padding_the_forward_applies() -> None:
    rows = _rows("efficientnet_lite0")
    stem = rows["conv_stem"].to_dict()
    assert stem["type"] == "Conv2dSame"
    assert stem["padding"] == [[0, 1], [0, 1]]
    assert stem["output_shape"] == [32, 112, 112]
    assert rows["blocks.2.0.conv_dw"].to_dict()["padding"] == [[1, 2], [1, 2]]
    assert all(row.receptive_field is not None for row in rows.values())


@pytest.mark.parametrize("name", zoo.list_models())
def test_every_entry_has_a_table_whose_sums_are_the_network(name: str) -> None:
    spec = zoo.get_spec(name)
    table = layer_table(spec)
    measured = profile(spec)
    assert sum(row.params for row in table.rows) == measured.params
    assert sum(row.flops for row in table.rows) + table.flops_outside_layers == pytest.approx(measured.gflops * 1e9)
    assert all(row.receptive_field is not None for row in table.rows), [r.note for r in table.rows if r.note][:1]


def test_a_layer_whose_forward_disagrees_with_its_formula_is_an_error() -> None:
    class PadsTwice(nn.Conv2d):  # a "same" convolution done wrong: padding stored and also added in forward
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(nn.functional.pad(x, (1, 1, 1, 1)))

    network = nn.Sequential(nn.Conv2d(3, 8, 3), PadsTwice(8, 8, 3, padding=1), nn.ReLU())
    with pytest.raises(LayerShapeError, match=r"layer 1 \(PadsTwice\).*\[8, 14, 14\].*\[8, 16, 16\]"):
        trace_layers(network, 16)


def test_an_operation_without_a_rule_leaves_the_field_empty_with_its_reason() -> None:
    network = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Upsample(scale_factor=2), nn.Conv2d(4, 4, 3))
    rows = trace_layers(network, 8).rows
    assert rows[0].receptive_field == (3, 3)
    assert rows[0].note is None
    assert [row.receptive_field for row in rows[1:]] == [None, None]
    assert all("upsample" in row.note for row in rows[1:])
    assert rows[2].output_shape == (4, 14, 14)  # sizes are still shown


def test_zoo_info_layers_formats(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "small_cnn", "--layers", "--format", "json", "--image-size", "32"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert list(rows[0]) == ["name", "type", "kernel", "stride", "padding", "dilation", "groups", "output_shape",
                             "receptive_field", "params", "flops"]
    assert rows[2]["output_shape"] == [32, 16, 16]
    assert rows[-1]["receptive_field"] == [46, 46]
    assert main(["info", "alexnet", "--layers", "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("name,type,kernel")
    assert "features.12,MaxPool2d,3×3,2,0,1,,256×6×6,195," in lines[13]
    assert main(["info", "alexnet", "--layers"]) == 0
    assert "195" in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "message"), [
    (["info", "alexnet", "--layers", "--image-size", "32"], "use --image-size 63 or more"),
    (["info", "alexnet", "--format", "csv"], "add --layers"),
    (["info", "alexnet", "--layers", "--image-size", "0"], "positive number of pixels"),
])
def test_bad_layer_requests_are_one_line_errors(argv: list[str], message: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert message in error
    assert "\n" not in error

