"""What commands are pointed at: run folders, checkpoints and bundles, and malicious pickles among them."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from finetune.shipping.sources import load_source
from tests.helpers import make_image_folder, write_malicious_pickle
from zoo.errors import ZooError
from zoo_cli.main import main

BUNDLE_METADATA = {
    "arch": "small_cnn", "classes": ["astronaut", "chelsea", "coffee"], "num_classes": 3, "image_size": 28,
    "resize": 32, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bilinear",
}


def test_the_malicious_pickle_really_runs_code_when_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    path = write_malicious_pickle(tmp_path / "evil.ckpt", marker)
    with path.open("rb") as file:
        pickle.load(file)  # what torch.load(weights_only=False) would do
    assert marker.exists()


def _malicious_source(kind: str, root: Path, marker: Path) -> tuple[Path, Path]:
    """The source to pass to a command, and the pickle file inside it."""
    if kind == "checkpoint":
        return (path := write_malicious_pickle(root / "evil.ckpt", marker)), path
    if kind == "run folder":
        return root / "run", write_malicious_pickle(root / "run" / "best.ckpt", marker)
    bundle = root / "bundle"
    bundle.mkdir()
    (bundle / "zoo.json").write_text(json.dumps(BUNDLE_METADATA), encoding="utf-8")
    return bundle, write_malicious_pickle(bundle / "model.safetensors", marker)


@pytest.mark.parametrize("kind", ["checkpoint", "run folder", "bundle"])
@pytest.mark.parametrize("command", ["predict", "evaluate", "export"])
def test_a_malicious_pickle_is_refused_and_never_runs(command: str, kind: str, tmp_path: Path, capsys) -> None:
    marker = tmp_path / "MARKER"
    source, pickle_file = _malicious_source(kind, tmp_path, marker)
    images = make_image_folder(tmp_path / "images", per_class=1)
    arguments = {
        "predict": [str(images / "chelsea" / "0.jpg")],
        "evaluate": ["--data", str(images)],
        "export": ["--out", str(tmp_path / "exported")],
    }[command]

    assert main([command, str(source), *arguments]) == 2

    error = capsys.readouterr().err.strip()
    assert "\n" not in error
    assert error.startswith(f"zoo {command}: error: cannot ")
    assert str(pickle_file) in error
    assert "plain" in error
    assert not marker.exists()
    assert not (tmp_path / "exported").exists()


def test_sources_that_are_not_models_are_named(tmp_path: Path) -> None:
    with pytest.raises(ZooError, match="does not exist"):
        load_source(tmp_path / "missing")
    with pytest.raises(ZooError, match="neither best.ckpt nor zoo.json"):
        load_source(tmp_path)
    torch.save({"state_dict": {"weight": torch.zeros(2)}}, tmp_path / "plain.ckpt")
    with pytest.raises(ZooError, match="not a zoo checkpoint"):
        load_source(tmp_path / "plain.ckpt")
    (tmp_path / "bundle").mkdir()
    (tmp_path / "bundle" / "zoo.json").write_text(json.dumps({"arch": "small_cnn"}), encoding="utf-8")
    with pytest.raises(ZooError, match="lacks classes, num_classes"):
        load_source(tmp_path / "bundle")


def test_resume_never_unpickles_code_whatever_the_environment(tmp_path: Path, monkeypatch, capsys) -> None:
    from tests.helpers import train_small_run
    from zoo_cli.main import main

    run_dir = train_small_run(tmp_path)
    marker = tmp_path / "pwned"
    write_malicious_pickle(run_dir / "last.ckpt", marker)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    capsys.readouterr()  # the training run's own output
    assert main(["finetune", "--resume", str(run_dir)]) == 2
    assert not marker.exists(), "the checkpoint's code ran"
    error = capsys.readouterr().err
    assert "weights_only=True" in error
    assert len(error.strip().splitlines()) == 1
