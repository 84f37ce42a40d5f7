"""Bundles that plain timm and torchvision load: published key names, timm's config.json, self-describing files,
the model card, and the torchvision lines of docs/commands.md run in a fresh interpreter without zoo."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import given
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import save_file

import zoo
from finetune.shipping.export import export
from finetune.shipping.model_card import model_card
from tests.helpers import train_small_run
from zoo.bundle import BundleMetadata, read_metadata
from zoo.interop import crop_pct, plain_model, plain_state_dict, zoo_state_dict
from zoo.registry import get_spec
from zoo.spec import Preprocessing

COMMANDS_DOC = Path(__file__).parents[2] / "docs" / "commands.md"  # holds the torchvision lines
# What a consumer of a bundle through its own library must not need.
ZOO_MODULES = ("zoo", "finetune", "zoo_cli", "pytorch_lightning", "lightning")


def _bundle(tmp_path_factory: pytest.TempPathFactory, arch: str, image_size: int | None, formats: list[str]) -> Path:
    run_dir = train_small_run(tmp_path_factory.mktemp(arch), arch, image_size)
    return export(run_dir, formats, run_dir.parent / "bundle").out_dir


@pytest.fixture(scope="module")
def small_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _bundle(tmp_path_factory, "small_cnn", None, ["onnx"])


@pytest.fixture(scope="module")
def torchvision_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _bundle(tmp_path_factory, "resnet18", 32, [])


@pytest.fixture(scope="module")
def timm_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _bundle(tmp_path_factory, "efficientnet_lite0", 64, ["torchscript"])


def _photo(bundle: Path) -> Path:
    return sorted((bundle.parent / "images").glob("*/*.jpg"))[0]


def _run_isolated(script: str, cwd: Path) -> list[str]:
    """``script``'s output lines, run by a fresh interpreter that cannot import the repository (-I)."""
    result = subprocess.run([sys.executable, "-I", "-c", script], capture_output=True, text=True, cwd=cwd, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.splitlines()


# The registry, and timm models whose heads are no single Linear (BiT's 1x1 conv, distilled DeiT's two).
@pytest.mark.parametrize("name", [*zoo.list_models(), "timm/resnetv2_50x1_bit", "timm/deit_tiny_distilled_patch16_224"])
def test_every_entry_exports_the_key_names_of_its_published_architecture(name: str) -> None:
    spec = get_spec(name)
    with torch.device("meta"):
        network = zoo.create_model(name, 3)
        published = plain_model(spec.library, spec.library_name, dict(spec.library_args), 3)
    plain = plain_state_dict(network)
    assert {key: tuple(value.shape) for key, value in plain.items()} == \
        {key: tuple(value.shape) for key, value in published.state_dict().items()}
    assert list(zoo_state_dict(network, plain)) == list(network.state_dict())


def test_zoo_json_names_the_library_and_its_own_model_name(timm_bundle: Path, torchvision_bundle: Path) -> None:
    timm_metadata = read_metadata(timm_bundle)
    # zoo's efficientnet_lite0 is timm's tf_efficientnet_lite0: timm's own efficientnet_lite0 is another network.
    assert (timm_metadata.arch, timm_metadata.library, timm_metadata.model_name) == \
        ("efficientnet_lite0", "timm", "tf_efficientnet_lite0")
    metadata = read_metadata(torchvision_bundle)
    assert (metadata.library, metadata.model_name, metadata.model_args) == ("torchvision", "resnet18", None)
    assert set(metadata.exports) == {"safetensors", "torchvision"}
    assert set(timm_metadata.exports) == {"safetensors", "torchscript", "timm"}
    assert all(entry["max_abs_diff"] <= 1e-4 for entry in [*metadata.exports.values(), *timm_metadata.exports.values()])


def test_the_weights_file_and_the_onnx_graph_carry_the_classes_and_preprocessing(small_bundle: Path) -> None:
    import onnx

    metadata = read_metadata(small_bundle)
    expected = {"library": "zoo", "model_name": "small_cnn", "model_args": None, "arch": "small_cnn",
                "classes": metadata.classes, "num_classes": 3,
                "preprocessing": {"crop": 28, "resize": 32, "interpolation": "bilinear", "mean": [0.5] * 3,
                                  "std": [0.5] * 3, "crop_fraction": 0.875},
                "dropout": metadata.dropout, "weights": "none", "temperature": metadata.temperature, "tta": "none",
                "flips_change_class": False}
    with safe_open(str(small_bundle / "model.safetensors"), "pt") as weights:
        assert json.loads(weights.metadata()["zoo"]) == expected
        assert "classifier.weight" in weights.keys()
        assert "classifier.linear.weight" not in weights.keys()
    props = {prop.key: prop.value for prop in onnx.load(str(small_bundle / "model.onnx")).metadata_props}
    assert json.loads(props["zoo"]) == expected


def test_a_bundle_with_zoo_key_names_still_loads(small_bundle: Path, tmp_path: Path) -> None:
    old = tmp_path / "old"
    old.mkdir()
    for name in ("zoo.json", "model.safetensors"):
        (old / name).write_bytes((small_bundle / name).read_bytes())
    model = zoo.load(small_bundle)
    save_file(model.network.state_dict(), str(old / "model.safetensors"))  # fc.linear.*, as bundles once held

    assert "classifier.linear.weight" in model.network.state_dict()
    assert torch.equal(zoo.load(old).predict_proba([_photo(small_bundle)]), model.predict_proba([_photo(small_bundle)]))


def test_readmes_torchvision_lines_load_the_bundle_without_zoo(torchvision_bundle: Path, tmp_path: Path) -> None:
    snippet = re.search(r"<!-- interop: torchvision -->\n```python\n(.*?)```", COMMANDS_DOC.read_text(encoding="utf-8"),
                        re.DOTALL)
    assert snippet is not None, "docs/commands.md lost its torchvision snippet"
    photo = _photo(torchvision_bundle)
    code = snippet.group(1).replace('"bundle/"', repr(str(torchvision_bundle))).replace('"cat.jpg"', repr(str(photo)))
    script = code + (
        "print(json.dumps(probabilities[0].tolist()))\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {ZOO_MODULES!r}))\n"
    )
    lines = _run_isolated("import sys\n" + script, tmp_path)

    assert lines[-1] == "[]"
    expected = zoo.load(torchvision_bundle).predict_proba([photo])[0]
    assert torch.allclose(torch.tensor(json.loads(lines[-2])), expected, atol=1e-5)


def test_timm_alone_rebuilds_a_timm_bundle_like_its_torchscript(timm_bundle: Path, tmp_path: Path) -> None:
    model = zoo.load(timm_bundle)
    batch = torch.stack([model.transform(zoo.images.load_rgb(_photo(timm_bundle)))] * 2)
    torch.save(batch, tmp_path / "batch.pt")
    script = (
        "import json, sys, timm, torch\n"
        f"model = timm.create_model('local-dir:{timm_bundle}', pretrained=True).eval()\n"
        f"with torch.no_grad(): logits = model(torch.load({str(tmp_path / 'batch.pt')!r}, weights_only=True))\n"
        f"torch.save(logits, {str(tmp_path / 'timm.pt')!r})\n"
        "config = timm.data.resolve_data_config(model=model)\n"
        "resize = timm.data.create_transform(**config).transforms[0].size\n"
        "print(json.dumps({**config, 'resize': resize, 'labels': model.pretrained_cfg['label_names']}))\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {ZOO_MODULES!r}))\n"
    )
    lines = _run_isolated(script, tmp_path)

    assert lines[-1] == "[]"
    with torch.no_grad():
        scripted = torch.jit.load(str(timm_bundle / "model.torchscript.pt"))(batch)
    assert (torch.load(tmp_path / "timm.pt", weights_only=True) - scripted).abs().max() < 1e-4
    config = json.loads(lines[-2])
    assert config == {"input_size": [3, 64, 64], "interpolation": "bicubic", "mean": [0.5, 0.5, 0.5],
                      "std": [0.5, 0.5, 0.5], "crop_pct": config["crop_pct"], "crop_mode": "center",
                      "resize": 73, "labels": model.classes}
    assert model.metadata.preprocessing.resize == 73  # floor(64 / 0.875), as timm computes it from crop_pct


def test_timms_crop_fraction_gives_zoos_resize_exactly() -> None:
    assert crop_pct(224, 256) == 0.875
    assert math.floor(224 / crop_pct(224, 232)) == 232  # torchvision's V2 ResNet weights: 224 / 232 alone gives 231


@given(st.integers(1, 4096).flatmap(lambda size: st.tuples(st.just(size), st.integers(size, 4096))))
def test_timms_crop_fraction_round_trips_every_resize(sizes: tuple[int, int]) -> None:
    size, resize = sizes
    assert math.floor(size / crop_pct(size, resize)) == resize


def _card(bundle: Path) -> tuple[BundleMetadata, str, str]:
    """A bundle's metadata and its model card's front matter and body."""
    metadata = read_metadata(bundle)
    front, body = model_card(metadata).removeprefix("---\n").split("---\n", 1)
    return metadata, front, body


def test_the_model_card_is_the_bundles_readme_tagged_for_the_hub(torchvision_bundle: Path) -> None:
    metadata, front, _ = _card(torchvision_bundle)
    assert yaml.safe_load(front) == {"pipeline_tag": "image-classification",
                                     "tags": ["image-classification", "zoo", "torchvision"]}
    assert (torchvision_bundle / "README.md").read_text(encoding="utf-8") == model_card(metadata)


def test_the_model_card_gives_the_test_error_with_its_interval(torchvision_bundle: Path) -> None:
    metadata, _, body = _card(torchvision_bundle)
    test = metadata.test
    assert test is not None
    low, high = test["top1_error_ci95"]
    assert f"| test | 3 | {test['top1_error']:.2f}% | {low:.2f}–{high:.2f}% |" in body


def test_the_model_card_describes_the_data_and_the_preprocessing(torchvision_bundle: Path) -> None:
    _, _, body = _card(torchvision_bundle)
    assert "18 training, 3 validation and 3 test images" in body
    assert "`astronaut`, `chelsea`, `coffee`" in body
    assert "Resize the shorter side to 36 px (bilinear, antialiased), centre-crop 32×32" in body
    assert "trained from scratch with zoo" in body  # weights none


def test_the_model_card_has_a_section_for_each_thing_a_user_asks(torchvision_bundle: Path) -> None:
    _, _, body = _card(torchvision_bundle)
    assert all(f"## {section}" in body for section in ("Data", "Results", "Preprocessing", "Intended use",
                                                       "Limitations"))


def test_the_model_card_says_so_when_the_network_did_not_learn(torchvision_bundle: Path) -> None:
    metadata, _, body = _card(torchvision_bundle)
    assert metadata.data is not None
    learned = metadata.model_copy(update={"data": {**metadata.data, "learned": True}})
    assert ("did not learn" in body) is (not metadata.data["learned"])
    assert "did not learn" not in model_card(learned)


def test_without_a_test_error_the_model_card_says_none_was_measured(torchvision_bundle: Path) -> None:
    no_test = model_card(read_metadata(torchvision_bundle).model_copy(update={"test": None}))
    assert "| test |" not in no_test
    assert "No error was measured on held-out test images" in no_test


def test_a_timm_card_names_its_base_model() -> None:
    # weights: the tag, as a run records it
    metadata = BundleMetadata(arch="timm/convnext_tiny", classes=["a", "b"], num_classes=2,
                              preprocessing=Preprocessing(224, 256, "bicubic", (0.5,) * 3, (0.5,) * 3),
                              weights="in12k_ft_in1k", library="timm", model_name="convnext_tiny")
    front = yaml.safe_load(model_card(metadata).removeprefix("---\n").split("---\n", 1)[0])
    assert front == {"pipeline_tag": "image-classification", "tags": ["image-classification", "zoo", "timm"],
                     "library_name": "timm", "base_model": "timm/convnext_tiny.in12k_ft_in1k"}
    for weights in ("none", "/data/weights/convnext.safetensors", "convnext.pth"):  # no hub repository to name
        card = model_card(metadata.model_copy(update={"weights": weights}))
        assert "base_model" not in yaml.safe_load(card.removeprefix("---\n").split("---\n", 1)[0])


def test_a_card_of_zoos_own_model_names_it_once() -> None:
    metadata = BundleMetadata(arch="small_cnn", classes=["a", "b"], num_classes=2,
                              preprocessing=Preprocessing(28, 32, "bilinear", (0.5,) * 3, (0.5,) * 3), weights="none",
                              library="zoo", model_name="small_cnn")
    card = model_card(metadata)
    front = yaml.safe_load(card.removeprefix("---\n").split("---\n", 1)[0])
    assert front["tags"] == ["image-classification", "zoo"]
    assert "An image classifier of 2 classes: zoo's `small_cnn` with a new classifier" in card
    assert card.count("small_cnn`") == card.count("zoo's `small_cnn`")  # never "zoo's small_cnn (zoo's small_cnn)"
    torchvision = model_card(metadata.model_copy(update={"arch": "resnet18", "library": "torchvision",
                                                         "model_name": "resnet18"}))
    assert "torchvision's `resnet18` (zoo's `resnet18`)" in torchvision
