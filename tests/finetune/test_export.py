"""``zoo export`` and ``zoo.load``: bundles that run without Lightning, each format checked numerically."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import zoo
from finetune.names import EXPORT_FORMATS
from finetune.shipping import export as export_module
from finetune.shipping.export import TOLERANCE, ExportError, export
from finetune.shipping.sources import load_source
from zoo.bundle import ONNX_FILE, TORCHSCRIPT_FILE
from zoo.images import load_rgb
from zoo_cli.main import main

BUNDLE_FILES = {"model.safetensors", "zoo.json", "README.md", "model.torchscript.pt", "model.onnx"}
# What a bundle's consumer must not need: the toolkit, the training framework, the model libraries.
NOT_NEEDED = ("zoo", "finetune", "zoo_cli", "pytorch_lightning", "lightning", "torchvision", "timm")


@pytest.fixture(scope="module")
def run_dir(small_run: Path) -> Path:
    return small_run


@pytest.fixture(scope="module")
def bundle(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export(run_dir, EXPORT_FORMATS, tmp_path_factory.mktemp("export") / "bundle").out_dir


@pytest.fixture(scope="module")
def photos(run_dir: Path) -> list[Path]:
    return sorted((run_dir.parent / "images").glob("*/*.jpg"))[::3]


@pytest.fixture(scope="module")
def batch(bundle: Path, photos: list[Path]) -> torch.Tensor:
    """Real photos, preprocessed as the bundle says."""
    model = zoo.load(bundle)
    return torch.stack([model.transform(load_rgb(path)) for path in photos])


def test_the_bundle_holds_every_file_and_its_metadata(run_dir: Path, bundle: Path) -> None:
    assert {path.name for path in bundle.iterdir()} == BUNDLE_FILES  # no temporary files left behind
    metadata = json.loads((bundle / "zoo.json").read_text(encoding="utf-8"))
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    assert metadata["arch"] == "small_cnn"
    assert metadata["classes"] == summary["classes"]
    assert metadata["num_classes"] == 3
    assert metadata["preprocessing"] == {
        "crop": 28, "resize": 32, "interpolation": "bilinear", "mean": [0.5] * 3, "std": [0.5] * 3,
        "crop_fraction": 0.875}
    assert metadata["weights"] == "none"
    for part, split in (("validation", "val"), ("test", "test")):
        assert metadata[part] == {
            "num_images": summary[f"num_{split}"], "top1_error": summary[f"{split}_top1_error"],
            "top1_error_ci95": summary[f"{split}_top1_error_ci95"], "k": 2,
            "topk_error": summary[f"{split}_topk_error"], "loss": summary[f"{split}_loss"],
        }
    assert metadata["temperature"] == summary["temperature"] > 0
    assert metadata["zoo_version"] == zoo.__version__
    assert metadata["torch_version"] == torch.__version__
    assert set(metadata["exports"]) == set(EXPORT_FORMATS)
    for name, entry in metadata["exports"].items():
        assert (bundle / entry["file"]).is_file(), name
        assert 0.0 <= entry["max_abs_diff"] <= TOLERANCE, name


def test_zoo_load_predicts_like_the_checkpoint(
    run_dir: Path, bundle: Path, photos: list[Path], batch: torch.Tensor
) -> None:
    model = zoo.load(bundle)
    expected = load_source(run_dir).model.predict_proba(photos)

    assert model.classes == ["astronaut", "chelsea", "coffee"]
    assert torch.allclose(model.predict_proba(photos), expected, atol=1e-6)
    assert torch.allclose(model.predict_proba([Image.open(path) for path in photos]), expected, atol=1e-6)
    assert torch.allclose(model.predict_proba(batch), expected, atol=1e-6)
    assert torch.allclose(expected.sum(dim=1), torch.ones(len(photos)))


def test_zoo_load_predict_names_the_classes_of_a_path_a_str_a_list_or_a_tensor(
    bundle: Path, photos: list[Path], batch: torch.Tensor
) -> None:
    model = zoo.load(bundle)
    probabilities = model.predict_proba(photos)
    expected = [(model.classes[int(row.argmax())], float(row.max())) for row in probabilities]

    def top1(result: list[list[tuple[str, float]]]) -> list[tuple[str, float]]:
        assert all(len(row) == 1 for row in result)
        return [(row[0][0], round(row[0][1], 5)) for row in result]

    rounded = [(name, round(p, 5)) for name, p in expected]
    assert top1(model.predict(str(photos[0]), top_k=1)) == rounded[:1]  # a str is one file, not "/", "t", …
    assert top1(model.predict(photos[0], top_k=1)) == rounded[:1]
    assert top1(model.predict([str(path) for path in photos], top_k=1)) == rounded
    assert top1(model.predict(batch, top_k=1)) == rounded
    top = model.predict(photos[0], top_k=99)[0]  # capped at the class count, best first
    assert sorted(name for name, _ in top) == model.classes
    assert [p for _, p in top] == sorted(
        (p for _, p in top), reverse=True)
    assert sum(p for _, p in top) == pytest.approx(1.0)


def test_zoo_load_needs_no_lightning(bundle: Path, photos: list[Path]) -> None:
    script = (
        "import sys, zoo\n"
        f"print(zoo.load({str(bundle)!r}).predict_proba([{str(photos[0])!r}]).shape)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning', 'finetune')))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.splitlines() == ["torch.Size([1, 3])", "[]"]


def test_onnx_runs_in_onnxruntime_with_any_batch_size(bundle: Path, batch: torch.Tensor) -> None:
    import onnx
    import onnxruntime

    onnx.checker.check_model(str(bundle / ONNX_FILE))
    session = onnxruntime.InferenceSession(str(bundle / ONNX_FILE), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == ["batch", 3, 28, 28]
    expected = zoo.load(bundle).logits(batch)
    for size in (1, len(batch)):
        logits = session.run(None, {"images": batch[:size].numpy()})[0]
        assert (torch.from_numpy(logits) - expected[:size]).abs().max() < TOLERANCE


def test_torchscript_runs_in_a_fresh_process_with_only_torch(bundle: Path, batch: torch.Tensor, tmp_path: Path) -> None:
    torch.save(batch, tmp_path / "batch.pt")
    script = (
        "import sys, torch\n"
        f"model = torch.jit.load({str(bundle / TORCHSCRIPT_FILE)!r})\n"
        f"torch.save(model(torch.load({str(tmp_path / 'batch.pt')!r}, weights_only=True)), "
        f"{str(tmp_path / 'out.pt')!r})\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {NOT_NEEDED!r}))\n"
    )
    # -I: no current folder or user site on the path, so nothing of the repository can be imported by accident.
    result = subprocess.run([sys.executable, "-I", "-c", script], capture_output=True, text=True, cwd=tmp_path,
                            check=True)
    assert result.stdout.strip() == "[]"
    logits = torch.load(tmp_path / "out.pt", weights_only=True)
    assert (logits - zoo.load(bundle).logits(batch)).abs().max() < TOLERANCE


@pytest.mark.parametrize("fmt", ["safetensors", "torchscript"])
def test_one_format_with_the_weights_and_the_printed_check(run_dir: Path, tmp_path: Path, fmt: str, capsys) -> None:
    out = tmp_path / "bundle"
    assert main(["export", str(run_dir), "--format", fmt, "--out", str(out)]) == 0

    expected = {"model.safetensors", "zoo.json", "README.md"} | ({TORCHSCRIPT_FILE} if fmt == "torchscript" else set())
    assert {path.name for path in out.iterdir()} == expected
    exports = json.loads((out / "zoo.json").read_text(encoding="utf-8"))["exports"]
    printed = capsys.readouterr().out
    assert "max |logit difference|" in printed
    for name, entry in exports.items():
        assert f"{entry['max_abs_diff']:.2e}" in printed
        assert name in printed


def test_a_non_empty_folder_is_refused_without_force(run_dir: Path, bundle: Path, tmp_path: Path, capsys) -> None:
    before = {path.name: path.stat().st_mtime_ns for path in bundle.iterdir()}
    assert main(["export", str(run_dir), "--out", str(bundle)]) == 2
    assert "--force" in capsys.readouterr().err
    assert {path.name: path.stat().st_mtime_ns for path in bundle.iterdir()} == before

    out = tmp_path / "old"
    out.mkdir()
    (out / ONNX_FILE).write_bytes(b"an old export of another model")
    (out / "notes.txt").write_text("the user's own file")
    # --force swaps a whole new folder in: the user's own files would go with the old bundle.
    assert main(["export", str(run_dir), "--format", "safetensors", "--out", str(out), "--force"]) == 2
    assert "notes.txt" in capsys.readouterr().err
    assert {path.name for path in out.iterdir()} == {ONNX_FILE, "notes.txt"}

    (out / "notes.txt").unlink()
    # A README.md or config.json beside no zoo.json is the user's (a project's), not an old bundle's model card.
    (out / "README.md").write_text("the user's project")
    assert main(["export", str(run_dir), "--format", "safetensors", "--out", str(out), "--force"]) == 2
    assert "README.md" in capsys.readouterr().err
    assert (out / "README.md").read_text() == "the user's project"
    (out / "README.md").unlink()
    assert main(["export", str(run_dir), "--format", "safetensors", "--out", str(out), "--force"]) == 0
    # No file of the old bundle passes as the new one's.
    assert {path.name for path in out.iterdir()} == {"model.safetensors", "zoo.json", "README.md"}
    # Beside its zoo.json, a bundle's model card is replaced with it.
    assert main(["export", str(run_dir), "--format", "safetensors", "--out", str(out), "--force"]) == 0


def test_an_export_that_does_not_reproduce_the_model_is_not_kept(run_dir: Path, tmp_path: Path, monkeypatch) -> None:
    run = export_module._run_torchscript
    monkeypatch.setattr(export_module, "_run_torchscript", lambda path, batch: run(path, batch) + 1e-3)
    out = tmp_path / "bundle"

    with pytest.raises(ExportError,
                       match=r"torchscript export does not reproduce the model: logits differ by up to 0\.001"):
        export(run_dir, ["torchscript"], out)

    assert not out.exists()  # nothing that could pass for a bundle


def test_an_interrupted_export_leaves_nothing_that_looks_complete(run_dir: Path, tmp_path: Path, monkeypatch) -> None:
    def interrupted(module: object, path: str) -> None:
        Path(path).write_bytes(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch.jit, "save", interrupted)
    out = tmp_path / "bundle"

    with pytest.raises(KeyboardInterrupt):
        export(run_dir, ["torchscript"], out)

    assert not out.exists()
    assert not list(out.parent.glob(".*tmp-*"))
    with pytest.raises(zoo.ZooError, match="not a zoo bundle"):
        zoo.load(out)


def test_predict_and_evaluate_accept_a_bundle(
    run_dir: Path, bundle: Path, photos: list[Path], tmp_path: Path, capsys
) -> None:
    paths = list(map(str, photos))
    assert main(["predict", str(bundle), *paths, "--format", "json"]) == 0
    from_bundle = json.loads(capsys.readouterr().out)
    assert main(["predict", str(run_dir), *paths, "--format", "json"]) == 0
    assert from_bundle == json.loads(capsys.readouterr().out)

    data = run_dir.parent / "images"
    assert main(["evaluate", str(bundle), "--data", str(data), "--out", str(tmp_path / "bundle")]) == 0
    assert main(["evaluate", str(run_dir), "--data", str(data), "--out", str(tmp_path / "run")]) == 0
    from_bundle, from_run = (json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("bundle", "run"))
    assert from_bundle["num_images"] == 24
    assert ({k: v for k, v in from_bundle.items() if k != "source"}
            == {k: v for k, v in from_run.items() if k != "source"})
