"""`zoo weights ARCH` and `zoo weights add FILE...` as a user calls them."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import per_test_environment, publish_under_own_digest, run_command
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


@dataclass(frozen=True)
class Listings:
    """What ``zoo weights`` printed: resnet50 as JSON, as CSV of every tag and as a table; efficientnet_lite0."""

    checkpoints: Path  # torch's checkpoint folder, empty
    json: str
    csv: str
    table: str
    pip_package: str


@pytest.fixture(scope="module")
def listings(tmp_path_factory: pytest.TempPathFactory) -> Listings:
    root = tmp_path_factory.mktemp("weights-listings")
    with per_test_environment(tmp_path_factory) as monkeypatch:
        monkeypatch.setenv("TORCH_HOME", str(root / "torch"))
        printed = [run_command(["weights", *argv], root).printed for argv in (
            ["resnet50", "--format", "json"], ["resnet50", "--tag", "all", "--format", "csv"], ["resnet50"],
            ["efficientnet_lite0"])]
        return Listings(torch_hub_checkpoints(), *printed)


def test_json_lists_the_default_tag_with_its_file_and_url(listings: Listings) -> None:
    (row,) = json.loads(listings.json)
    assert row["tag"] == "IMAGENET1K_V2"
    assert row["default"] is True
    assert row["file"] == "resnet50-11ad3fa6.pth"
    assert row["sha256_prefix"] == "11ad3fa6"
    assert row["url"] == "https://download.pytorch.org/models/resnet50-11ad3fa6.pth"


def test_json_says_where_the_file_would_go_and_that_it_is_not_there(listings: Listings) -> None:
    (row,) = json.loads(listings.json)
    assert row["folder"] == str(listings.checkpoints)
    assert row["installed"] is False


def test_csv_of_all_tags_has_a_row_per_tag_under_a_header(listings: Listings) -> None:
    header, *rows = listings.csv.strip().splitlines()
    assert len(rows) == 2
    assert header.split(",")[:5] == ["arch", "tag", "default", "source", "file"]


def test_the_table_names_the_default_tag_its_file_and_folder(listings: Listings) -> None:
    for part in ("resnet50:IMAGENET1K_V2 (default)", "resnet50-11ad3fa6.pth", "11ad3fa6", str(listings.checkpoints)):
        assert part in listings.table


def test_weights_from_a_pip_package_say_so(listings: Listings) -> None:
    assert "pip package" in listings.pip_package


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
