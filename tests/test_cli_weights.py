"""`zoo weights ARCH` and `zoo weights add FILE...` as a user calls them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tests.helpers import publish_under_own_digest
from zoo.weights.torchvision_hub import torch_hub_checkpoints
from zoo_cli.main import main


@pytest.fixture
def checkpoints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return torch_hub_checkpoints()


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("zoo weights: error: ")
    assert captured.err.count("\n") == 1
    assert "Traceback" not in captured.err
    return captured.err


def test_listing_as_json_and_as_a_table(capsys: pytest.CaptureFixture[str], checkpoints: Path) -> None:
    assert main(["weights", "resnet50", "--format", "json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["tag"] == "IMAGENET1K_V2"
    assert row["default"] is True
    assert row["file"] == "resnet50-11ad3fa6.pth"
    assert row["sha256_prefix"] == "11ad3fa6"
    assert row["url"] == "https://download.pytorch.org/models/resnet50-11ad3fa6.pth"
    assert row["folder"] == str(checkpoints)
    assert row["installed"] is False
    assert main(["weights", "resnet50", "--tag", "all", "--format", "csv"]) == 0
    header, *rows = capsys.readouterr().out.strip().splitlines()
    assert len(rows) == 2
    assert header.split(",")[:5] == ["arch", "tag", "default", "source", "file"]
    assert main(["weights", "resnet50"]) == 0
    table = capsys.readouterr().out
    for part in ("resnet50:IMAGENET1K_V2 (default)", "resnet50-11ad3fa6.pth", "11ad3fa6", str(checkpoints)):
        assert part in table
    assert main(["weights", "efficientnet_lite0"]) == 0
    assert "pip package" in capsys.readouterr().out


def test_errors_are_one_line_with_status_2(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                           checkpoints: Path) -> None:
    assert "no files given" in _one_line_error(capsys, ["weights", "add"])
    assert "does not exist" in _one_line_error(capsys, ["weights", "add", str(tmp_path / "gone.pth")])
    assert "no weights tagged 'nonsense'" in _one_line_error(capsys, ["weights", "resnet50", "--tag", "nonsense"])
    wrong = tmp_path / "resnet18-f37072fd.pth"
    wrong.write_bytes(b"not resnet18's weights")
    assert "no weights tagged 'nonsense'" in _one_line_error(
        capsys, ["weights", "add", str(wrong), "--arch", "resnet18", "--tag", "nonsense"])
    assert "not f37072fd" in _one_line_error(capsys, ["weights", "add", str(wrong)])
    assert "no pretrained weights" in _one_line_error(capsys, ["weights", "small_cnn"])
    assert "closest: resnet50" in _one_line_error(capsys, ["weights", "resnt50"])
    assert "takes no files" in _one_line_error(capsys, ["weights", "resnet18", str(wrong)])
    assert not checkpoints.exists()


def test_add_prints_what_it_installed(capsys: pytest.CaptureFixture[str], tmp_path: Path, checkpoints: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    carried = tmp_path / "resnet18.pth"
    carried.write_bytes(b"resnet18 weights")
    digest = hashlib.sha256(carried.read_bytes()).hexdigest()
    carried = carried.rename(tmp_path / publish_under_own_digest(monkeypatch, "resnet18", carried))
    assert main(["weights", "add", str(carried), "--format", "json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["status"] == "installed"
    assert row["path"] == str(checkpoints / carried.name)
    assert row["sha256"] == digest
    assert main(["weights", "add", str(carried)]) == 0
    assert capsys.readouterr().out.startswith("already installed: ")
