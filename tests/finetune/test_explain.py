"""``zoo explain``: Grad-CAM that points at the object and changes with the weights, feature maps, filters, errors."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import spearmanr
from skimage import data

import zoo
from finetune.inspection.saliency import class_activation_map, crop_box, on_image
from finetune.inspection.stages import run
from finetune.shipping.export import export
from finetune.shipping.pretrained import load_pretrained
from tests.helpers import make_image_folder
from zoo_cli.main import main

SIDE = 224  # efficientnet_lite0's input: resized to 256, its centre 224 cropped, so the object is placed inside 14..210
CAT_FACE = (100, 20, 350, 290)  # chelsea's head, in the photo's pixels


def quadrant_image(path: Path, row: int, column: int) -> Path:
    """The cat's head, 92 px, in one quadrant of a plain grey square."""
    canvas = Image.new("RGB", (SIDE, SIDE), (128, 128, 128))
    head = Image.fromarray(data.chelsea()).crop(CAT_FACE).resize((92, 92))
    canvas.paste(head, (18 + column * 96, 18 + row * 96))
    canvas.save(path)
    return path


@pytest.fixture(scope="module")
def pretrained_explained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("explain-pretrained")
    images = [quadrant_image(folder / "top-left.png", 0, 0), quadrant_image(folder / "bottom-right.png", 1, 1)]
    out = folder / "out"
    assert main(["explain", "efficientnet_lite0", *map(str, images), "--out", str(out)]) == 0
    return out, json.loads((out / "explain.json").read_text(encoding="utf-8"))


QUADRANTS = {"top-left.png": (0, 0), "bottom-right.png": (1, 1)}


def _explained(pretrained_explained: tuple[Path, dict], image: str) -> tuple[Path, dict]:
    """The output folder and the report's entry for ``image``."""
    out, report = pretrained_explained
    return out, next(entry for entry in report["images"] if Path(entry["path"]).name == image)


def test_the_report_names_the_network_the_method_and_each_images_layer(pretrained_explained: tuple[Path, dict]) -> None:
    _, report = pretrained_explained
    assert report["arch"] == "efficientnet_lite0"
    assert report["method"] == "gradcam"
    assert [Path(entry["path"]).name for entry in report["images"]] == list(QUADRANTS)  # each image, in order
    assert all(entry["layer"] == "bn2" for entry in report["images"])


@pytest.mark.parametrize("image", QUADRANTS)
def test_the_heat_map_is_a_float_map_of_the_input_scaled_to_1(pretrained_explained: tuple[Path, dict],
                                                               image: str) -> None:
    out, entry = _explained(pretrained_explained, image)
    heat = np.load(out / entry["files"][1])
    assert heat.shape == (SIDE, SIDE)
    assert heat.dtype == np.float32
    assert 0.0 <= heat.min()
    assert heat.max() <= 1.0
    assert heat.max() > 0.9


@pytest.mark.parametrize("image", QUADRANTS)
def test_the_heat_map_peaks_in_the_quadrant_of_the_object(pretrained_explained: tuple[Path, dict], image: str) -> None:
    out, entry = _explained(pretrained_explained, image)
    heat = np.load(out / entry["files"][1])
    peak = np.unravel_index(heat.argmax(), heat.shape)
    quadrant = QUADRANTS[image]
    assert (peak[0] >= SIDE // 2, peak[1] >= SIDE // 2) == (bool(quadrant[0]), bool(quadrant[1])), peak


@pytest.mark.parametrize("image", QUADRANTS)
def test_the_heat_map_covers_only_the_centre_crop_the_model_saw(pretrained_explained: tuple[Path, dict],
                                                                image: str) -> None:
    out, entry = _explained(pretrained_explained, image)
    assert entry["crop"] == [14.0, 14.0, 210.0, 210.0]
    assert np.load(out / entry["files"][1])[:14].max() == 0.0  # outside the centre crop the model saw nothing


@pytest.mark.parametrize("image", QUADRANTS)
def test_the_top_5_predictions_are_sorted_and_the_first_is_the_target(pretrained_explained: tuple[Path, dict],
                                                                      image: str) -> None:
    _, entry = _explained(pretrained_explained, image)
    top = entry["predictions"]
    assert len(top) == 5
    assert top[0]["class"] == entry["target_class"] == "Egyptian cat"
    assert [p["probability"] for p in top] == sorted((p["probability"] for p in top), reverse=True)


@pytest.mark.parametrize("image", QUADRANTS)
def test_every_file_an_image_lists_is_written(pretrained_explained: tuple[Path, dict], image: str) -> None:
    out, entry = _explained(pretrained_explained, image)
    for name in entry["files"]:
        assert (out / name).is_file()


def test_filters_and_feature_maps_are_drawn_as_pngs(pretrained_explained: tuple[Path, dict]) -> None:
    out, _ = pretrained_explained
    with Image.open(out / "filters.png") as filters, Image.open(out / "top-left.feature_maps.png") as maps:
        assert filters.format == maps.format == "PNG"
        assert maps.height > 500


def test_the_heat_map_changes_when_the_weights_are_randomised(tmp_path: Path) -> None:
    # Adebayo et al. 2018: a saliency map that survives randomised weights explains the image, not the model.
    model = load_pretrained("efficientnet_lite0")
    image = model.transform(Image.open(quadrant_image(tmp_path / "cat.png", 0, 0))).unsqueeze(0)
    target = model.classes.index("Egyptian cat")
    trained = class_activation_map(model.network, model.network.get_submodule("bn2"), image, target)
    randomised = copy.deepcopy(model.network)
    torch.manual_seed(0)
    for module in randomised.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    changed = class_activation_map(randomised, randomised.get_submodule("bn2"), image, target)
    assert np.abs(trained - changed).mean() > 0.1
    assert spearmanr(trained.ravel(), changed.ravel()).statistic < 0.5


@pytest.mark.parametrize(("name", "stage"), [
    ("resnet18", "layer4"), ("vgg11", "features"), ("googlenet", "inception5b"), ("alexnet", "features"),
    ("efficientnet_lite0", "bn2"), ("small_cnn", "features"),
])
def test_the_default_layer_is_the_last_convolutional_stage(name: str, stage: str) -> None:
    network = zoo.get_spec(name).build()
    stages = run(network, torch.zeros(1, 3, 96, 96)).stages
    assert stages[-1].name == stage
    sizes = [tuple(s.activations.shape[-2:]) for s in stages]
    assert sizes == sorted(sizes, reverse=True)
    assert len(set(sizes)) == len(sizes)


def test_the_heat_map_is_placed_on_the_crop_the_model_saw() -> None:
    box = crop_box(400, 300, 256, 224)  # resized to 341×256, crop 224 at (58, 16): in the image ×300/256
    assert box == pytest.approx((58 * 300 / 256, 16 * 300 / 256, 282 * 300 / 256, 240 * 300 / 256), abs=0.5)
    heat = on_image(np.ones((224, 224), dtype=np.float32), 400, 300, box)
    assert heat.shape == (300, 400)
    assert heat[150, 200] == 1.0
    assert heat[150, 10] == 0.0
    assert heat[5, 200] == 0.0


@pytest.fixture(scope="module")
def trained(small_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("explain-trained")
    bundle = root / "bundle"
    export(small_run, ("safetensors",), bundle)
    images = make_image_folder(root / "photos", per_class=1)
    return small_run, bundle, images


@pytest.mark.parametrize(("kind", "method"), [("run", "scorecam"), ("bundle", "gradcam++"), ("ckpt", "eigencam")])
def test_explain_a_run_folder_a_bundle_and_a_checkpoint(trained: tuple[Path, Path, Path], kind: str, method: str,
                                                        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir, bundle, images = trained
    source = {"run": run_dir, "bundle": bundle, "ckpt": run_dir / "best.ckpt"}[kind]
    out = tmp_path / "out"
    argv = ["explain", str(source), str(images), "--out", str(out), "--method", method, "--class", "coffee"]
    assert main([*argv, "--layer", "features.1", "--top-k", "2"]) == 0
    report = json.loads((out / "explain.json").read_text(encoding="utf-8"))
    assert report["method"] == method
    assert len(report["images"]) == 3
    for entry in report["images"]:
        assert entry["target_class"] == "coffee"
        assert entry["layer"] == "features.1"
        assert len(entry["predictions"]) == 2
        with Image.open(entry["path"]) as image:
            assert np.load(out / entry["files"][1]).shape == (image.height, image.width)
    assert (out / "filters.png").is_file()
    assert "coffee" in capsys.readouterr().out


def test_images_with_one_name_get_their_own_files(trained: tuple[Path, Path, Path], tmp_path: Path) -> None:
    run_dir, _, images = trained
    out = tmp_path / "out"
    assert main(["explain", str(run_dir), str(images / "chelsea" / "0.jpg"), str(images / "coffee" / "0.jpg"),
                 "--out", str(out)]) == 0
    assert (out / "0.gradcam.npy").is_file()
    assert (out / "0-2.gradcam.npy").is_file()


@pytest.mark.parametrize(("extra", "message"), [
    (["--layer", "features.9"], "no layer 'features.9' in small_cnn for --layer (closest: features"),
    (["--layer", "classifier.linear"], "--layer classifier.linear outputs [3], not a feature map"),
    (["--class", "tea"], "unknown class 'tea' for --class (the model's classes: astronaut, chelsea, coffee)"),
    (["--method", "gradcam+"], "unknown --method 'gradcam+' (did you mean gradcam++?)"),
    (["--top-k", "0"], "--top-k must be at least 1"),
])
def test_bad_requests_are_one_line_errors(trained: tuple[Path, Path, Path], tmp_path: Path, extra: list[str],
                                          message: str, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir, _, images = trained
    assert main(["explain", str(run_dir), str(images), "--out", str(tmp_path / "out"), *extra]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error
    assert "\n" not in error


def test_bad_images_sources_and_out_folders_are_one_line_errors(trained: tuple[Path, Path, Path], tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    run_dir, _, images = trained
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("not an image", encoding="utf-8")
    cases = [
        ([str(run_dir), str(not_an_image), "--out", str(tmp_path / "out")], f"cannot read image {not_an_image}"),
        ([str(run_dir), str(images), "--out", str(not_an_image)], "is a file: pass a folder"),
        (["resnet", str(images), "--out", str(tmp_path / "out")], "does not exist, and unknown architecture 'resnet'"),
        (["small_cnn", str(images), "--out", str(tmp_path / "out")], "small_cnn has no pretrained weights"),
    ]
    for argv, message in cases:
        assert main(["explain", *argv]) == 2
        error = capsys.readouterr().err.strip()
        assert message in error
        assert "\n" not in error
    assert not (tmp_path / "out").exists()
