"""`zoo list` and `zoo info` as a user calls them."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from dataclasses import dataclass

import pytest

import zoo
from tests.helpers import per_test_environment, run_command
from zoo_cli.main import main

SCHEMA = {
    "name": str, "family": str, "depth": int, "params": int, "gflops": float,
    "ilsvrc_year": (int, type(None)), "ilsvrc_top5_error": (float, type(None)), "ilsvrc_models": (int, type(None)),
    "ilsvrc_single_model_top5_error": (float, type(None)),
    "imagenet_top1_error": (float, type(None)), "imagenet_top5_error": (float, type(None)),
    "weights_cached": (bool, type(None)),
}


def test_list_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--format", "json", "--sort", "depth"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert sorted(row["name"] for row in rows) == sorted(zoo.list_models())  # every entry, once
    for row in rows:
        for key, kind in SCHEMA.items():
            assert isinstance(row[key], kind), (row["name"], key)
    assert [r["depth"] for r in rows] == sorted(r["depth"] for r in rows)
    resnet152 = next(r for r in rows if r["name"] == "resnet152")
    assert resnet152["ilsvrc_top5_error"] == 3.57
    assert resnet152["imagenet_top1_error"] == pytest.approx(17.716)
    small = next(r for r in rows if r["name"] == "small_cnn")
    assert small["ilsvrc_top5_error"] is None
    assert small["imagenet_top1_error"] is None


@dataclass(frozen=True)
class Listing:
    """``zoo list`` as JSON rows by name and as table lines 200 columns wide, and ``zoo info vgg16``."""

    rows: dict[str, dict]
    lines: list[str]
    info: str

    def line(self, name: str) -> str:
        """The table's line of ``name``."""
        return next(line for line in self.lines if line.startswith(f"│ {name} "))


@pytest.fixture(scope="module")
def listing(tmp_path_factory: pytest.TempPathFactory) -> Listing:
    out = tmp_path_factory.mktemp("list")
    with per_test_environment(tmp_path_factory) as monkeypatch:
        rows = {row["name"]: row for row in json.loads(run_command(["list", "--format", "json"], out).printed)}
        monkeypatch.setenv("COLUMNS", "200")
        lines = run_command(["list"], out).printed.splitlines()
        return Listing(rows, lines, run_command(["info", "vgg16"], out).printed)


def test_list_gives_the_ilsvrc_place_and_how_many_networks_the_entry_was(listing: Listing) -> None:
    rows = listing.rows
    assert (rows["vgg16"]["ilsvrc_place"], rows["vgg16"]["ilsvrc_models"]) == (2, 7)
    assert (rows["resnet18"]["ilsvrc_top5_error"], rows["resnet18"]["ilsvrc_models"]) == (3.57, 6)


def test_list_gives_one_networks_figure_only_to_the_network_it_was_measured_on(listing: Listing) -> None:
    rows = listing.rows
    # ResNet-152's single-model 4.49% is its own, not resnet18's; AlexNet's one CNN: 18.2%
    assert rows["resnet18"]["ilsvrc_single_model_top5_error"] is None
    assert rows["resnet152"]["ilsvrc_single_model_top5_error"] == 4.49
    assert rows["alexnet"]["ilsvrc_single_model_top5_error"] == 18.2


def test_the_table_says_winner_or_runner_up_and_marks_ensembles(listing: Listing) -> None:
    assert "2014 runner-up" in listing.line("vgg16")
    assert "7.3 ×7" in listing.line("vgg16")
    assert "2015 winner" in listing.line("resnet152")
    assert "3.57 ×6" in listing.line("resnet152")
    assert any("×N: an ensemble of N networks" in line for line in listing.lines)


def test_the_table_gives_one_networks_figure_on_validation(listing: Listing) -> None:
    assert "4.49 (val)" in listing.line("resnet152")


def test_info_says_the_place_and_the_size_of_the_ensemble(listing: Listing) -> None:
    assert "ILSVRC 2014, runner-up: top-5 error 7.3% (ensemble of 7)" in listing.info


def test_list_pattern_csv_and_markdown(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "vgg16*", "--format", "csv"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("name,family,depth")
    assert [line.split(",")[0] for line in lines[1:]] == ["vgg16", "vgg16_bn"]
    assert main(["list", "resnet50", "--format", "markdown"]) == 0
    assert "| resnet50 | ResNet | 50 |" in capsys.readouterr().out


def test_list_timm_shows_pretrained_tags(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--timm", "resnet18*", "--format", "json"]) == 0
    rows = {r["name"]: r["pretrained_tags"] for r in json.loads(capsys.readouterr().out)}
    assert "a1_in1k" in rows["timm/resnet18"]


def test_info_json_has_weights_and_stages(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "resnet18", "--format", "json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["head"] == "fc"
    assert info["input_size"] == 224
    assert [s["name"] for s in info["stages"]][-1] == "fc"
    assert info["stages"][-1]["output_shape"] == [1, 1000]
    assert sum(s["params"] for s in info["stages"]) == info["params"]
    assert {w["tag"] for w in info["weights"]} == {"IMAGENET1K_V1"}


@pytest.mark.parametrize("argv", [["info", "resnet5"], ["list", "nothing*"], ["list", "--sort", "speed"]])
def test_bad_names_are_one_line_errors_with_status_2(argv, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("zoo ")
    assert "\n" not in err


def test_import_zoo_and_zoo_list_do_not_import_lightning() -> None:
    code = (
        "import sys, zoo; from zoo_cli.main import main; main(['list', '--format', 'json']);"
        "assert not any(m.split('.')[0] in {'lightning', 'pytorch_lightning'} for m in sys.modules), "
        "'lightning imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr


def test_zoo_errors_and_the_cli_parser_do_not_import_torch() -> None:
    # zoo's names load on first use: the parser (--help, a bad flag) and an error class must not wait for torch.
    code = (
        "import sys, zoo.errors, zoo._io; from zoo.errors import ZooError; from zoo_cli.main import build_parser;"
        "build_parser(); assert 'torch' not in sys.modules, 'torch imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("columns", [80, 120, 200])
def test_the_registry_table_fits_the_terminal_with_whole_names_and_figures(columns: int, monkeypatch, capsys) -> None:
    assert main(["list", "--format", "json"]) == 0
    expected = json.loads(capsys.readouterr().out)
    monkeypatch.setenv("COLUMNS", str(columns))
    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    table = [line for line in lines if not line.startswith(("ILSVRC:", "narrow terminal"))]
    assert max(map(len, table)) <= columns
    for row in expected:  # the name whole on one line, with its parameters and weights' top-1 error uncut
        line = next(line for line in table if line.strip(" │").startswith(row["name"] + " "))
        assert f"{row['params'] / 1e6:.2f}" in line
        if row["imagenet_top1_error"] is not None:
            assert f"{row['imagenet_top1_error']:.2f}" in line
    assert any(line.startswith("narrow terminal") for line in lines) == (columns < 160)
    assert all(line.rstrip().endswith(("┓", "┃", "┩", "│", "┘")) for line in table[1:] if line.strip()) or columns < 160


@pytest.mark.parametrize("columns", [80, 120])
def test_the_layer_table_fits_the_terminal_with_whole_names_and_figures(columns: int, monkeypatch, capsys) -> None:
    assert main(["info", "resnet18", "--layers", "--format", "csv"]) == 0
    expected = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))  # csv: one column per field, unchanged
    assert list(expected[0])[:7] == ["name", "type", "kernel", "stride", "padding", "dilation", "groups"]
    monkeypatch.setenv("COLUMNS", str(columns))
    assert main(["info", "resnet18", "--layers"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(map(len, lines)) <= columns
    header = next(index for index, line in enumerate(lines) if line.lstrip().startswith("layer "))
    kind_at = lines[header].index("kind")
    rows: list[tuple[str, list[str]]] = []
    for line in lines[header + 2:]:
        if not line.strip() or not line.startswith(" "):  # the notes under the table
            break
        name, figures = line[:kind_at].strip(), line[kind_at:].split()[1:]
        if figures:  # a row; a line of names alone continues the row above (a folded name)
            rows.append((name, figures))
        else:
            rows[-1] = (rows[-1][0] + name, rows[-1][1])
    assert [name for name, _ in rows] == [row["name"] for row in expected]  # every name whole
    for (_, figures), row in zip(rows, expected, strict=True):  # params and MFLOPs never cut
        assert figures[-2:] == [row["params"], f"{int(row['flops']) / 1e6:.2f}"]
    if columns == 120:  # wide enough for one line per layer
        assert lines[header + 2 + len(rows)].strip() == "" or not lines[header + 2 + len(rows)].startswith(" ")
