"""Hostile and damaged inputs (issue 15): each is refused in one line naming the problem and the fix, never a
traceback, a hang or lost work."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

import zoo
from finetune.results import evaluate as evaluate_module
from finetune.shipping.export import export
from tests.helpers import make_image_folder, train_small_run
from zoo._io import DiskError
from zoo_cli.main import SIGPIPE_STATUS, main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_small_run(tmp_path_factory.mktemp("faults"))


@pytest.fixture(scope="module")
def trained_bundle(run_dir: Path) -> Path:
    return export(run_dir, ["safetensors"], run_dir.parent / "bundle").out_dir


@pytest.fixture
def bundle(trained_bundle: Path, tmp_path: Path) -> Path:
    """A copy of the bundle, for a test to damage."""
    return Path(shutil.copytree(trained_bundle, tmp_path / "bundle"))


@pytest.fixture(scope="module")
def photo(run_dir: Path) -> Path:
    return sorted((run_dir.parent / "images").glob("*/*.jpg"))[0]


def _edit_metadata(bundle: Path, **values: object) -> None:
    path = bundle / "zoo.json"
    path.write_text(json.dumps({**json.loads(path.read_text(encoding="utf-8")), **values}), encoding="utf-8")


def _metadata(bundle: Path) -> dict:
    return json.loads((bundle / "zoo.json").read_text(encoding="utf-8"))


def _one_line_error(capsys: pytest.CaptureFixture[str], command: str) -> str:
    error = capsys.readouterr().err
    assert error.startswith(f"zoo {command}: error: "), error
    assert error.count("\n") == 1, error
    return error


# 1. zoo.json checked against the model it rebuilds.
@pytest.mark.parametrize(("key", "value"), [
    ("classes", ["astronaut", "chelsea"]),  # 2 names for 3 outputs: predict failed with an IndexError
    ("classes", "xyz"),  # a string of 3 letters was read as 3 classes
    ("classes", ["astronaut", 7, "coffee"]),
    ("classes", ["astronaut", "astronaut", "coffee"]),
    ("num_classes", True),
    ("arch", ["small_cnn"]),
    ("preprocessing.mean", [0.5, 0.5]),
    ("preprocessing.mean", [0.5, "0.5", 0.5]),
    ("preprocessing.std", [0.5, 0.0, 0.5]),
    ("preprocessing.std", [0.5, -1.0, 0.5]),
    ("preprocessing.crop", 0),
    ("preprocessing.crop", -28),
    ("preprocessing.crop", "28"),
    ("preprocessing.crop", True),
    ("preprocessing.crop", 10**9),  # its tensors would not fit in memory
    ("preprocessing.resize", 20),  # below the crop: the centre crop would pad the image with black
    ("preprocessing.interpolation", "box"),  # PIL-only: torchvision cannot resize a tensor with it
    ("dropout", 5),
    ("temperature", 0),
    ("temperature", "1.0"),
    # Round two: finite, but every output would be NaN.
    ("temperature", 1e-300),
    ("preprocessing.std", [1e-300, 0.5, 0.5]),
    ("preprocessing.mean", [1e308, 0.5, 0.5]),
])
def test_a_zoo_json_value_that_cannot_rebuild_the_model_is_named(
    bundle: Path, photo: Path, key: str, value: object, capsys: pytest.CaptureFixture[str]
) -> None:
    section, _, name = key.rpartition(".")
    if section:
        path = bundle / "zoo.json"
        content = json.loads(path.read_text(encoding="utf-8"))
        content[section][name] = value
        path.write_text(json.dumps(content), encoding="utf-8")
    else:
        _edit_metadata(bundle, **{key: value})

    assert main(["predict", str(bundle), str(photo)]) == 2

    error = _one_line_error(capsys, "predict")
    assert f"zoo.json: {key} must be " in error
    assert "correct it, or make the file again" in error
    assert "Traceback" not in error


def test_non_finite_numbers_and_huge_values_are_refused_and_shown_short(bundle: Path, photo: Path, capsys) -> None:
    # Python's json reads NaN and Infinity; a damaged file may hold a megabyte where a word belongs.
    _edit_metadata(bundle, temperature=float("inf"))
    assert "Infinity" in (bundle / "zoo.json").read_text(encoding="utf-8")
    assert main(["predict", str(bundle), str(photo)]) == 2
    assert "temperature must be a number from 0.001 to 1000.0" in _one_line_error(capsys, "predict")

    _edit_metadata(bundle, temperature=1.0, preprocessing={**_metadata(bundle)["preprocessing"],
                                                           "interpolation": "b" * 1_000_000})
    assert main(["predict", str(bundle), str(photo)]) == 2
    error = _one_line_error(capsys, "predict")
    assert "interpolation must be one of" in error
    assert len(error) < 400


@pytest.mark.parametrize("content", ['{"arch": "small_cnn", "classes": [', "[" * 100_000, ""],
                         ids=["cut off", "nested too deep", "empty"])
def test_a_zoo_json_that_is_not_json_is_one_line(bundle: Path, photo: Path, content: str, capsys) -> None:
    (bundle / "zoo.json").write_text(content, encoding="utf-8")
    assert main(["predict", str(bundle), str(photo)]) == 2
    assert "export the bundle again" in _one_line_error(capsys, "predict")


def test_a_bundle_without_its_weights_says_so(bundle: Path, photo: Path, capsys) -> None:
    (bundle / "model.safetensors").unlink()
    assert main(["evaluate", str(bundle), "--data", str(photo.parent.parent)]) == 2
    error = _one_line_error(capsys, "evaluate")
    assert "no model.safetensors" in error
    assert "--weights" not in error


def test_a_checkpoint_s_metadata_is_checked_too(run_dir: Path, photo: Path, tmp_path: Path, capsys) -> None:
    content = torch.load(run_dir / "best.ckpt", map_location="cpu", weights_only=True)
    content["zoo"]["classes"] = ["astronaut", "chelsea"]
    torch.save(content, tmp_path / "damaged.ckpt")

    assert main(["predict", str(tmp_path / "damaged.ckpt"), str(photo)]) == 2
    assert "classes must be a list of 3 names" in _one_line_error(capsys, "predict")


# 2. Only regular files are read: a FIFO waits forever for a writer.
@contextmanager
def _fails_instead_of_hanging(fifo: Path) -> Iterator[list[bool]]:
    """Whether anything opened ``fifo`` for reading; a writer connects to such a reader and leaves at once,
    so a regression fails the test instead of hanging it."""
    opened: list[bool] = []
    done = threading.Event()

    def writer() -> None:
        while not done.is_set():
            try:  # ENXIO while no one reads
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
                opened.append(True)
            except OSError:
                done.wait(0.02)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        yield opened
    finally:
        done.set()
        thread.join()


def test_a_fifo_in_a_folder_is_reported_and_never_opened(run_dir: Path, photo: Path, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(photo, folder / "a.jpg")
    os.mkfifo(folder / "x.png")

    with _fails_instead_of_hanging(folder / "x.png") as opened:
        assert main(["predict", str(run_dir), str(folder), "--format", "json"]) == 1

    assert not opened
    results = {Path(result["path"]).name: result for result in json.loads(capsys.readouterr().out)}
    assert results["a.jpg"]["error"] is None
    assert results["a.jpg"]["predictions"]
    assert results["x.png"]["error"].startswith("not a regular file")


def test_a_fifo_given_directly_is_refused_in_one_line(run_dir: Path, tmp_path: Path, capsys) -> None:
    os.mkfifo(tmp_path / "x.png")

    with _fails_instead_of_hanging(tmp_path / "x.png") as opened:
        assert main(["predict", str(run_dir), str(tmp_path / "x.png")]) == 2

    assert not opened
    assert "x.png is not a regular file" in _one_line_error(capsys, "predict")


def test_fifos_where_zoo_reads_a_model_or_its_summary_are_never_opened(run_dir: Path, photo: Path, tmp_path: Path,
                                                                        capsys) -> None:
    os.mkfifo(tmp_path / "model.ckpt")
    with _fails_instead_of_hanging(tmp_path / "model.ckpt") as opened:
        assert main(["predict", str(tmp_path / "model.ckpt"), str(photo)]) == 2
    assert not opened
    assert "model.ckpt is not a regular file" in _one_line_error(capsys, "predict")

    run = Path(shutil.copytree(run_dir, tmp_path / "run"))
    (run / "summary.json").unlink()
    os.mkfifo(run / "summary.json")
    with _fails_instead_of_hanging(run / "summary.json") as opened:
        assert main(["predict", str(run), str(photo)]) == 0
    assert not opened


# 3. An --out that cannot be a folder is refused before any work.
@pytest.mark.parametrize("under_a_file", [False, True])
def test_evaluate_refuses_a_file_as_out_before_evaluating(
    bundle: Path, photo: Path, tmp_path: Path, monkeypatch, under_a_file: bool, capsys
) -> None:
    file = tmp_path / "results"
    file.write_text("the user's file")
    monkeypatch.setattr(evaluate_module, "load_source", lambda *args, **kwargs: pytest.fail("evaluated anyway"))
    out = file / "eval" if under_a_file else file

    assert main(["evaluate", str(bundle), "--data", str(photo.parent.parent), "--out", str(out)]) == 2

    assert "--out" in _one_line_error(capsys, "evaluate")
    assert file.read_text() == "the user's file"


def test_report_and_compare_refuse_a_file_as_out(run_dir: Path, tmp_path: Path, capsys) -> None:
    file = tmp_path / "results"
    file.write_text("the user's file")

    assert main(["report", str(run_dir), "--out", str(file)]) == 2
    assert f"--out {file} is a file" in _one_line_error(capsys, "report")
    assert main(["compare", "--archs", "small_cnn", "--data", str(run_dir.parent / "images"), "--out", str(file)]) == 2
    assert f"--out {file} is a file" in _one_line_error(capsys, "compare")
    assert file.read_text() == "the user's file"


def test_report_refuses_a_run_given_twice_and_lr_find_a_run_folder_as_out(run_dir: Path, tmp_path: Path,
                                                                           capsys) -> None:
    same = tmp_path / "same-run"
    same.symlink_to(run_dir)  # one run under two names would count as two seeds
    assert main(["report", str(run_dir), str(same), "--out", str(tmp_path / "report")]) == 2
    assert "is given twice" in _one_line_error(capsys, "report")
    before = sorted(path.name for path in run_dir.iterdir())
    assert main(["lr-find", "--arch", "small_cnn", "--data", str(run_dir.parent / "images"), "--out",
                 str(run_dir)]) == 2
    assert "holds a run of zoo finetune" in _one_line_error(capsys, "lr-find")
    assert sorted(path.name for path in run_dir.iterdir()) == before


# 4. A damaged summary.json is named with what to do.
def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize(("damage", "expected"), [
    pytest.param(lambda text, summary: text[: len(text) // 2], "cannot read", id="cut off"),
    pytest.param(lambda text, summary: "[1, 2, 3]", "holds a JSON list", id="a list"),
    pytest.param(lambda text, summary: json.dumps({k: v for k, v in summary.items() if k != "test_top1_error"}),
                 "lacks test_top1_error", id="a key missing"),
    pytest.param(lambda text, summary: json.dumps({k: v for k, v in summary.items() if k != "config"}),
                 "lacks config", id="no config"),
    pytest.param(lambda text, summary: json.dumps({**summary, "accuracy": 0.9}), "has unknown key accuracy",
                 id="a field of another version"),
    pytest.param(lambda text, summary: json.dumps({**summary, "learned": "yes"}), "learned must be true or false",
                 id="text for a bool"),
    pytest.param(lambda text, summary: json.dumps({**summary, "val_top1_error_ci95": "20-90"}),
                 "val_top1_error_ci95 must be", id="text for an interval"),
    pytest.param(lambda text, summary: json.dumps({**summary, "config": {**summary["config"], "data": 5}}),
                 "config.data must be a mapping, got 5", id="a number for a config section"),
])
def test_report_names_a_damaged_summary(run_dir: Path, tmp_path: Path, damage, expected: str, capsys) -> None:
    damaged = tmp_path / "run"
    damaged.mkdir()
    text = (run_dir / "summary.json").read_text(encoding="utf-8")
    (damaged / "summary.json").write_text(damage(text, _summary(run_dir)), encoding="utf-8")

    assert main(["report", str(run_dir), str(damaged), "--out", str(tmp_path / "report")]) == 2

    error = _one_line_error(capsys, "report")
    assert str(damaged / "summary.json") in error
    assert expected in error
    assert "train the run again" in error
    assert not (tmp_path / "report").exists()


def test_a_damaged_summary_does_not_stop_using_the_checkpoint(run_dir: Path, photo: Path, tmp_path: Path) -> None:
    run = Path(shutil.copytree(run_dir, tmp_path / "run"))
    (run / "summary.json").write_text("[]", encoding="utf-8")  # it only gives the figures a bundle repeats
    assert main(["predict", str(run), str(photo)]) == 0
    result = export(run, ["safetensors"], tmp_path / "bundle")
    assert json.loads((result.out_dir / "zoo.json").read_text(encoding="utf-8"))["validation"] is None


def test_a_damaged_speed_cache_is_measured_again(run_dir: Path, tmp_path: Path, capsys) -> None:
    run = Path(shutil.copytree(run_dir, tmp_path / "run"))
    (run / "inference.json").write_text('{"ms_per_image": "fast"}', encoding="utf-8")

    assert main(["report", str(run), "--out", str(tmp_path / "report")]) == 0
    row, = json.loads((tmp_path / "report" / "results.json").read_text(encoding="utf-8"))
    assert row["predict_ms_per_image"] > 0


# 5. A reader that leaves early (| head -1) ends zoo quietly.
@pytest.mark.parametrize("command", [["info", "resnet18"], ["list"]])
def test_a_closed_pipe_ends_zoo_quietly(command: list[str]) -> None:
    process = subprocess.Popen([sys.executable, "-m", "zoo_cli.main", *command], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    process.stdout.close()  # before zoo writes a line: every write meets a closed pipe
    _, error = process.communicate(timeout=120)

    assert b"Traceback" not in error
    assert b"BrokenPipe" not in error
    assert process.returncode == SIGPIPE_STATUS


# 6. A weights file that needs code to unpickle: the refusal says why.
class NotATensor:
    """A plain Python object: harmless, but weights_only=True cannot load it (it could be any class)."""


def test_a_weights_file_holding_an_object_is_refused_with_the_reason(run_dir: Path, tmp_path: Path, capsys) -> None:
    weights = tmp_path / "weights.pth"
    torch.save({"features.0.weight": torch.zeros(1), "extra": NotATensor()}, weights)

    assert main(["finetune", "--data", str(run_dir.parent / "images"), "--arch", "small_cnn", "--weights",
                 str(weights), "--out", str(tmp_path / "run"), "--max-steps", "1"]) == 2

    error = _one_line_error(capsys, "finetune")
    assert "NotATensor" in error
    assert "weights_only=True" in error
    assert "arbitrary code" in error
    assert not (tmp_path / "run" / "best.ckpt").exists()


def test_a_checkpoint_holding_an_object_is_refused_with_the_reason(run_dir: Path, photo: Path, tmp_path: Path,
                                                                  capsys) -> None:
    content = torch.load(run_dir / "best.ckpt", map_location="cpu", weights_only=True)
    torch.save({**content, "extra": NotATensor()}, tmp_path / "object.ckpt")

    assert main(["predict", str(tmp_path / "object.ckpt"), str(photo)]) == 2

    error = _one_line_error(capsys, "predict")
    assert "NotATensor" in error
    assert "arbitrary code" in error
    assert "weights_only=True" in error


# 7. Long class names are cut in tables, not the numbers beside them.
def test_long_class_names_leave_predict_s_probabilities_visible(bundle: Path, photo: Path, capsys) -> None:
    names = [letter * 300 for letter in "abc"]
    _edit_metadata(bundle, classes=names)

    assert main(["predict", str(bundle), str(photo), "--top-k", "3"]) == 0
    table = capsys.readouterr().out
    assert len(re.findall(r"\b[01]\.\d{3}\b", table)) == 3
    assert "…" in table
    assert max(map(len, table.splitlines())) <= 200  # the width of piped output

    assert main(["predict", str(bundle), str(photo), "--top-k", "3", "--format", "json"]) == 0
    result, = json.loads(capsys.readouterr().out)
    assert {prediction["class"] for prediction in result["predictions"]} == set(names)  # whole in the files


def test_long_class_names_leave_evaluate_s_figures_visible(bundle: Path, tmp_path: Path, capsys) -> None:
    names = [letter * 250 for letter in "abc"]  # a folder name holds at most 255 bytes
    _edit_metadata(bundle, classes=names)
    data = make_image_folder(tmp_path / "images", per_class=1, classes=tuple(names))

    assert main(["evaluate", str(bundle), "--data", str(data), "--out", str(tmp_path / "eval")]) == 0

    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("│ " + names[0][:10])]
    # precision, recall, F1 (two decimals) and the support of 1 image, each still on the row
    assert len(rows) == 1
    assert len(re.findall(r"\b\d\.\d\d\b", rows[0])) == 3
    assert rows[0].rstrip(" │").endswith("1")
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text(encoding="utf-8"))
    assert [row["class"] for row in metrics["per_class"]] == names


# 8. A failed export --force leaves the previous bundle whole.
def _bundle_files(bundle: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in bundle.iterdir()}


@pytest.mark.parametrize("failing", ["safetensors", "torchscript"])
def test_a_full_disk_during_export_force_keeps_the_old_bundle(
    run_dir: Path, bundle: Path, photo: Path, monkeypatch, failing: str, capsys
) -> None:
    before = _bundle_files(bundle)
    probabilities = zoo.load(bundle).predict_proba([photo])

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    if failing == "safetensors":
        import safetensors.torch

        monkeypatch.setattr(safetensors.torch, "save_file", full)
    else:
        monkeypatch.setattr(torch.jit, "save", full)  # after the new weights were written

    with pytest.raises(DiskError, match=r"No space left on device; any previous bundle is unchanged: free space"):
        export(run_dir, ["safetensors", "torchscript"], bundle, force=True)
    assert main(["export", str(run_dir), "--out", str(bundle), "--force"]) == 2
    assert "No space left on device" in _one_line_error(capsys, "export")

    assert _bundle_files(bundle) == before
    assert torch.equal(zoo.load(bundle).predict_proba([photo]), probabilities)
    assert [path.name for path in bundle.parent.iterdir() if path.name.startswith(".")] == []


def test_ctrl_c_in_predict_is_one_line_with_the_sigint_status(bundle: Path, photo: Path, monkeypatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    import finetune.shipping.predict

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(finetune.shipping.predict, "predict", interrupted)
    assert main(["predict", str(bundle), str(photo)]) == 130
    assert capsys.readouterr().err.strip() == "zoo predict: interrupted"


@pytest.mark.parametrize("text", ["", "path,label\n/x.png,a\n", "path,label,predicted,probability\n/x.png,a\n"])
def test_a_damaged_test_predictions_csv_is_one_line(run_dir: Path, tmp_path: Path, text: str) -> None:
    from finetune.results.heldout import PREDICTIONS_FILE, read_predictions

    path = tmp_path / PREDICTIONS_FILE
    path.write_text(text, encoding="utf-8")
    with pytest.raises(zoo.ZooError) as error:
        read_predictions(path)
    assert "\n" not in str(error.value)
    assert str(path) in str(error.value)
    assert "train the run again" in str(error.value)
    assert read_predictions(run_dir / PREDICTIONS_FILE)  # the real one reads


def test_zoo_json_reads_back_as_a_typed_record_and_unknown_keys_are_named(bundle: Path) -> None:
    metadata = zoo.load(bundle).metadata
    assert isinstance(metadata, zoo.bundle.BundleMetadata)
    assert metadata.preprocessing.crop == metadata.image_size
    assert set(metadata.exports) == {"safetensors"}
    assert metadata.test is not None
    _edit_metadata(bundle, accuracy=0.99)
    with pytest.raises(zoo.ZooError) as error:
        zoo.load(bundle)
    assert "unknown key accuracy" in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(("values", "message"), [({"validation": "x"}, "validation must be a mapping"),
                                                 ({"exports": []}, "exports must be a mapping"),
                                                 ({"zoo_version": 3}, "zoo_version must be text")])
def test_zoo_json_information_of_the_wrong_type_is_named(bundle: Path, values: dict, message: str) -> None:
    _edit_metadata(bundle, **values)
    with pytest.raises(zoo.ZooError) as error:
        zoo.load(bundle)
    assert message in str(error.value)


# Round two (issue 26).
def test_a_thin_strip_is_reported_by_predict_and_explain_and_the_others_answered(
        bundle: Path, photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    strip = tmp_path / "strip.png"
    Image.new("L", (1, 1_000_000)).save(strip)  # 1 KB; resized to the model's 36 px it would be 36 million pixels
    assert main(["predict", str(bundle), str(strip), str(photo), "--format", "json"]) == 1
    rows = json.loads(capsys.readouterr().out)
    assert "too thin to resize" in rows[0]["error"]
    assert rows[1]["predictions"]
    assert rows[1]["error"] is None
    assert main(["explain", str(bundle), str(strip), str(photo), "--out", str(tmp_path / "out")]) == 1
    assert "skipped" in capsys.readouterr().err
    assert (tmp_path / "out" / f"{photo.stem}.gradcam.npy").is_file()


def test_no_escape_sequence_in_a_file_name_reaches_the_terminal(bundle: Path, photo: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    hostile = tmp_path / "a\x1b]0;title\x07\x1b[2Jb.jpg"
    shutil.copy(photo, hostile)
    for fmt in ("table", "csv", "json"):
        assert main(["predict", str(bundle), str(hostile), "--format", fmt]) == 0
        out = capsys.readouterr().out
        assert "\x1b" not in out
        assert "\x07" not in out
        assert ("\\x1b" in out or "\\u001b" in out)


def test_a_class_count_changed_to_a_huge_one_is_refused_before_the_network_is_built(
        bundle: Path, photo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # resnet18 with 100,000 classes is a 200 MB head, vgg16's 1.6 GB: matched on the meta device first.
    _edit_metadata(bundle, arch="resnet18", num_classes=100_000, classes=[f"c{i}" for i in range(100_000)],
                   library=None, model_name=None, model_args=None)
    assert main(["predict", str(bundle), str(photo)]) == 2
    assert "do not fit resnet18" in _one_line_error(capsys, "predict")


def test_a_terminal_gets_progress_bars_drawing_but_never_a_title_a_clear_screen_or_a_bell() -> None:
    import io

    from zoo_cli.output import EscapingStream

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    line = "\x1b[A\x1b[2K 50%\x1b[0m a\x1b]0;title\x07b \x1b[2J\r\n"
    for raw, drawing in ((Terminal(), "\x1b[A\x1b[2K 50%\x1b[0m"), (io.StringIO(), "\\x1b[A\\x1b[2K 50%\\x1b[0m")):
        EscapingStream(raw).write(line)
        assert raw.getvalue() == f"{drawing} a\\x1b]0;title\\x07b \\x1b[2J\r\n"
