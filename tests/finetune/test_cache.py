"""The decode-once image cache and the feature-cached linear probe are correct, not only fast."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from skimage import data as skdata
from torchvision.transforms import v2 as T

import zoo
from finetune.config import DataConfig, ModelConfig, OptimConfig, RunConfig, TrainerConfig
from finetune.data import decoded
from finetune.data import features as probe
from finetune.data.datamodule import ImageDataModule
from finetune.data.features import FeatureDataModule
from finetune.data.split import Split, split_folder
from finetune.results.records import RunSummary
from finetune.training.module import Classifier
from finetune.training.run import train
from zoo_cli.main import main

# Odd, non-square sizes: the centre crop's rounding must match the plain pipeline's on both axes.
SIZES = [(37, 53), (61, 29), (40, 40), (45, 44), (33, 70), (52, 31)]


def odd_folder(root: Path) -> Path:
    """Two classes of real photo crops in odd sizes, as JPEG and PNG."""
    for label, photo in enumerate((skdata.chelsea(), skdata.coffee())):
        for index, (width, height) in enumerate(SIZES):
            crop = photo[index * 20 : index * 20 + 150, index * 30 : index * 30 + 200]
            path = root / f"class{label}" / f"{index}.{'jpg' if index % 2 else 'png'}"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(crop).resize((width, height)).save(path)
    return root


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache of this test's own, so entries made by other tests never count."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("ZOO_CACHE", str(folder))
    return folder


@pytest.fixture
def odd_split(tmp_path: Path) -> Split:
    return split_folder(odd_folder(tmp_path / "images"), val_fraction=0.34, seed=0)


def _batches(data: ImageDataModule, part: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    torch.manual_seed(0)  # the same shuffling for both pipelines
    return list(data.train_dataloader() if part == "train" else data.val_dataloader())


@pytest.mark.parametrize(("arch", "image_size"), [("small_cnn", 28), ("small_cnn", 33), ("efficientnet_lite0", 41)])
@pytest.mark.parametrize("cache", ["memory", "disk"])
def test_decoded_cache_yields_the_plain_tensors_without_augmentation(
    odd_split: Split, cache_dir: Path, arch: str, image_size: int, cache: str
) -> None:
    spec = zoo.get_spec(arch)
    plain = ImageDataModule(odd_split, spec, image_size, DataConfig(cache="none", augment="none", batch_size=3))
    cached = ImageDataModule(odd_split, spec, image_size, DataConfig(cache=cache, augment="none", batch_size=3))
    for part in ("train", "val"):
        expected, got = _batches(plain, part), _batches(cached, part)
        assert len(got) == len(expected) > 1
        for (images, labels), (want, want_labels) in zip(got, expected, strict=True):
            assert images.shape[1:] == (3, image_size, image_size)
            assert torch.equal(labels, want_labels)
            assert torch.equal(images, want), f"{part} batch differs from the plain pipeline"


@pytest.mark.parametrize("augment", ["standard", "trivial"])
def test_decoded_images_are_augmented_on_tensors(odd_split: Split, cache_dir: Path, augment: str) -> None:
    data = ImageDataModule(odd_split, zoo.get_spec("small_cnn"), 28, DataConfig(cache="memory", augment=augment))
    draws = [next(iter(data.train_dataloader()))[0] for _ in range(3)]
    assert all(draw.shape == (len(odd_split.train), 3, 28, 28) and draw.dtype == torch.float32 for draw in draws)
    assert all(-1.0 <= float(draw.min()) and float(draw.max()) <= 1.0 for draw in draws), \
        "normalised with mean = std = 0.5"
    assert not torch.equal(draws[0].sort(0).values, draws[1].sort(0).values), "each epoch sees new random crops"


def test_batched_random_crops_keep_the_picture(cache_dir: Path) -> None:
    # Left half dark, right half bright: every crop keeps dark left of bright (unflipped) and both levels.
    square = torch.zeros(64, 1, 40, 40)
    square[..., 20:] = 1.0
    crops = decoded.random_resized_crops(square, 16, flip=0.0)
    assert crops.shape == (64, 1, 16, 16)
    assert float(crops.min()) >= 0.0
    assert float(crops.max()) <= 1.0
    assert bool((crops[..., 0] <= crops[..., -1]).all()), "left stays left"
    assert 0.3 < float(crops.mean()) < 0.7, "crops are spread over the whole square"
    mirrored = decoded.random_resized_crops(square, 16, flip=1.0)
    assert bool((mirrored[..., 0] >= mirrored[..., -1]).all()), "flipped: left and right swap"


@pytest.mark.parametrize("cache", ["memory", "none"])
def test_shift_moves_the_centre_crop_by_whole_pixels_with_and_without_the_cache(
    odd_split: Split, cache_dir: Path, cache: str
) -> None:
    data = ImageDataModule(odd_split, zoo.get_spec("small_cnn"), 28, DataConfig(cache=cache, augment="shift"))
    shift, crop = 3, 28  # 10% of 28 px
    # The windows a shift may take: the resized square, its edges repeated, around the centre crop.
    resize = data.preprocessing.resize
    around = T.Compose([T.ToImage(), T.Resize(resize, antialias=True), T.CenterCrop(resize),
                        T.Pad(shift, padding_mode="edge"), T.CenterCrop(crop + 2 * shift),
                        T.ToDtype(torch.float32, scale=True),
                        T.Normalize(data.preprocessing.mean, data.preprocessing.std)])
    squares = [around(Image.open(sample.path).convert("RGB")) for sample in odd_split.train]
    moves = set()
    for _ in range(3):  # three epochs
        images, _labels = next(iter(data.train_dataloader()))
        for image in images:
            found = {(dy - shift, dx - shift) for square in squares for dy in range(2 * shift + 1)
                     for dx in range(2 * shift + 1)
                     if torch.allclose(image, square[:, dy:dy + crop, dx:dx + crop], atol=1e-5)}
            assert found, "each training image is its centre crop moved by whole pixels, at most 3 each way"
            moves |= found
    assert len(moves) > 5, "the shifts vary from image to image and epoch to epoch"


@pytest.mark.parametrize("first", ["small", "large"])
def test_decoding_once_gives_each_images_own_square_whatever_the_sizes(
        first: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Small images are decoded one after another and resized in chunks, large ones in threads: either way each
    # image's square is the one it has alone, in order, also when a chunk ends early on its pixel count.
    from torchvision.transforms import InterpolationMode

    monkeypatch.setattr(decoded, "CHUNK_IMAGES", 3)
    monkeypatch.setattr(decoded, "CHUNK_PIXELS", 300 * 200)
    photo = Image.fromarray(skdata.astronaut())
    sizes = [(8, 8), (40, 40), (300, 200), (40, 40), (8, 8), (28, 28), (28, 28), (50, 30)]
    paths = []
    for index, size in enumerate(sizes if first == "small" else sizes[2:] + sizes[:2]):
        paths.append(tmp_path / f"{index}.png")
        photo.resize(size).save(paths[-1])
    out = torch.zeros(len(paths), 3, 36, 36, dtype=torch.uint8).numpy()
    decoded.decode_all(paths, 36, 32, InterpolationMode.BILINEAR, out)
    for index, path in enumerate(paths):
        alone = decoded.decode_square(path, 36, 32, InterpolationMode.BILINEAR)
        assert torch.equal(torch.from_numpy(out[index]), alone)


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_squares_of_a_mixed_batch_equal_each_images_own(interpolation: str) -> None:
    # Byte shards resize a batch's images of one size together: the squares must be those of one image at a time,
    # in the batch's order, whatever sizes are mixed in it.
    from torchvision.transforms import InterpolationMode

    photo = torch.from_numpy(skdata.astronaut()).permute(2, 0, 1)
    images = [photo[:, :40, :40], photo[:, 100:130, 50:90], photo[:, 200:240, 200:240], photo[:, :300, :180],
              photo[:, 300:330, 10:50]]
    squares = decoded.Squares(36, 32, interpolation).of(images)
    assert [tuple(square.shape) for square in squares] == [(3, 36, 36)] * len(images)
    for image, square in zip(images, squares, strict=True):
        assert torch.equal(square, decoded.square_of(image, 36, 32, InterpolationMode(interpolation)))


def test_decoded_disk_cache_is_reused_and_follows_files_and_sizes(
    odd_split: Split, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = zoo.get_spec("small_cnn")
    decodes: list[int] = []
    real_decode_all = decoded.decode_all
    monkeypatch.setattr(decoded, "decode_all",
                        lambda paths, *rest: (decodes.append(len(paths)), real_decode_all(paths, *rest)))

    def prepare(image_size: int = 28) -> int:
        before = len(decodes)
        ImageDataModule(odd_split, spec, image_size, DataConfig(cache="disk")).prepare_data()
        return len(decodes) - before

    assert prepare() == 2, "train and val decoded once"
    assert prepare() == 0, "a second run reads the files"
    assert len(list((cache_dir / "decoded").glob("*.npy"))) == 2
    changed = odd_split.train[0].path
    Image.fromarray(skdata.astronaut()[:50, :60]).save(changed, "PNG" if changed.suffix == ".png" else "JPEG")
    assert prepare() == 1, "an edited training image invalidates the training entry only"
    assert prepare(image_size=32) == 2, "another image size is another entry"


def test_auto_cache_keeps_small_data_in_memory(odd_split: Split) -> None:
    data = ImageDataModule(odd_split, zoo.get_spec("small_cnn"), 28, DataConfig())
    assert data.cache.value == "memory"
    assert "MiB" in data.cache.reason


def _probe_data(split: Split, module: Classifier, image_size: int = 28, cache: str = "disk",
                views: int = 0) -> FeatureDataModule:
    config = DataConfig(cache=cache, batch_size=4, feature_views=views)
    return FeatureDataModule(split, zoo.get_spec("small_cnn"), image_size, config, module)


def _small_cnn_module(num_classes: int) -> Classifier:
    torch.manual_seed(0)
    network = zoo.create_model("small_cnn", num_classes).to(memory_format=torch.channels_last)
    return Classifier(network, "classifier", num_classes, OptimConfig(), memory_format=torch.channels_last)


@pytest.fixture
def extractions(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the feature extractions (one per view of a split part)."""
    calls: list[int] = []
    real = probe.extract_features

    def counted(*args: object) -> torch.Tensor:
        features = real(*args)
        calls.append(len(features))
        return features

    monkeypatch.setattr(probe, "extract_features", counted)
    return calls


def test_feature_cache_is_reused_and_invalidated(odd_split: Split, cache_dir: Path, extractions: list[int]) -> None:
    module = _small_cnn_module(2)

    def prepare(split: Split = odd_split, **settings: object) -> int:
        before = len(extractions)
        data = _probe_data(split, module, **settings)
        data.prepare_data()
        data.setup("fit")
        return len(extractions) - before

    assert prepare() == 2, "train and val features computed once"
    assert prepare() == 0, "a second run reads them back"
    assert len(list((cache_dir / "features").glob("*.pt"))) == 2
    with torch.no_grad():
        module.network.classifier.linear.weight.add_(1.0)
    assert prepare() == 0, "the head is not part of the key"
    with torch.no_grad():
        module.network.features[0][0].weight.add_(0.01)
    assert prepare() == 2, "other backbone weights: new features"
    assert prepare(image_size=32) == 2, "another image size: new features"
    assert prepare(dataclasses.replace(odd_split, train=odd_split.train[1:])) == 1, \
        "another file list: new train features"
    edited = odd_split.val[0].path
    Image.fromarray(skdata.astronaut()[:50, :60]).save(edited, "PNG" if edited.suffix == ".png" else "JPEG")
    assert prepare() == 1, "an edited validation image: new validation features only"
    assert prepare(cache="memory") == 2, "memory: computed in each run"
    assert prepare(cache="memory") == 2, "memory: computed in each run"


def test_augmented_views_are_cached_per_image(odd_split: Split, cache_dir: Path, extractions: list[int]) -> None:
    data = _probe_data(odd_split, _small_cnn_module(2), views=3)
    data.setup("fit")
    train, val = data.datasets["train"], data.datasets["val"]
    assert train.features.shape == (len(odd_split.train), 3, 625)
    assert val.features.shape == (len(odd_split.val), 1, 625)
    assert not torch.equal(train.features[:, 0], train.features[:, 1]), "each view is another random crop"
    again = _probe_data(odd_split, _small_cnn_module(2), views=3)
    again.setup("fit")
    assert torch.equal(again.datasets["train"].features, train.features), "same seed: same views, from the cache"
    assert len(extractions) == 3 + 1


def _network_state(checkpoint: Path) -> dict[str, torch.Tensor]:
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    return {key.removeprefix("network."): value for key, value in state.items() if key.startswith("network.")}


def test_cached_features_train_the_same_head_as_naive_training(
    image_folder: Path, tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = RunConfig(
        data=DataConfig(path=str(image_folder), image_size=32, batch_size=4, augment="none"),
        model=ModelConfig(arch="resnet18", weights="none"),
        optim=OptimConfig(freeze="backbone", lr=0.01),
        # One precision for both: "auto" times bf16 on CPUs without AMX, and the two runs could choose differently.
        trainer=TrainerConfig(epochs=2, seed=0, precision="32"),
    )

    def run(name: str, cache: str) -> tuple[dict[str, torch.Tensor], RunSummary | None]:
        result = train(dataclasses.replace(config, data=dataclasses.replace(config.data, cache=cache),
                                           out=str(tmp_path / name)))
        return _network_state(result.run_dir / "last.ckpt"), result.summary

    naive, naive_summary = run("naive", "none")
    cached, cached_summary = run("cached", "auto")
    assert naive.keys() == cached.keys(), "whole network saved"
    assert any(key.startswith("layer4.") for key in cached), "whole network saved"
    for key, value in naive.items():
        assert torch.allclose(cached[key], value, atol=1e-5), f"{key} differs between naive and cached training"
    assert not torch.allclose(cached["fc.linear.weight"], _initial_head(config)), "the head was trained"
    assert cached_summary is not None
    assert naive_summary is not None
    assert cached_summary.val_top1_error == naive_summary.val_top1_error

    monkeypatch.setattr(probe, "extract_features", _fail)
    again, _ = run("again", "auto")
    assert all(torch.equal(again[key], cached[key]) for key in cached), "a second run reads the cached features"


def test_run_caches_the_augmented_views_it_is_asked_for(
    image_folder: Path, tmp_path: Path, cache_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["finetune", "--arch", "small_cnn", "--data", str(image_folder), "--image-size", "28", "--batch-size", "4",
            "--epochs", "2", "--freeze", "backbone", "--feature-views", "3", "--out", str(tmp_path / "views")]
    assert main(argv) == 0
    shapes = sorted(tuple(torch.load(path, weights_only=True).shape) for path in (cache_dir / "features").glob("*.pt"))
    summary = json.loads((tmp_path / "views" / "summary.json").read_text(encoding="utf-8"))
    expected = [(summary["num_val"], 1, 625), (summary["num_test"], 1, 625), (summary["num_train"], 3, 625)]
    assert shapes == sorted(expected), "3 train views, 1 val view, 1 test view"
    assert summary["epochs"] == 2
    assert summary["val_top1_error"] is not None

    argv[argv.index("backbone")] = "none"
    argv[-1] = str(tmp_path / "full")
    assert main(argv) == 0
    assert "feature_views only applies to a frozen backbone" in capsys.readouterr().err


def _initial_head(config: RunConfig) -> torch.Tensor:
    torch.manual_seed(config.trainer.seed)
    return zoo.create_model("resnet18", 3).fc.linear.weight


def _fail(*args: object) -> torch.Tensor:
    raise AssertionError("features were computed again instead of read from the cache")


@pytest.mark.parametrize("augment", ["light", "shift", "standard", "trivial", "randaugment", "autoaugment", "augmix"])
@pytest.mark.parametrize("cache", ["memory", "none"])
def test_every_augmentation_preset_feeds_batches_with_and_without_the_cache(
    odd_split: Split, cache_dir: Path, augment: str, cache: str
) -> None:
    config = DataConfig(cache=cache, augment=augment, batch_size=4, num_workers=0)
    data = ImageDataModule(odd_split, zoo.get_spec("small_cnn"), 28, config)
    images, labels = next(iter(data.train_dataloader()))
    assert images.shape == (4, 3, 28, 28)
    assert images.dtype == torch.float32
    assert labels.shape == (4,)
    assert bool(torch.isfinite(images).all())
    assert -1.0 <= float(images.min())
    assert float(images.max()) <= 1.0
    val_images, _ = next(iter(data.val_dataloader()))
    assert val_images.shape[1:] == (3, 28, 28), "validation is never augmented"


@pytest.mark.parametrize(("mixup", "cutmix"), [(0.4, 0.0), (0.0, 1.0), (0.4, 1.0)])
@pytest.mark.parametrize("cache", ["memory", "none"])
def test_mixup_and_cutmix_turn_labels_into_class_probabilities(
    odd_split: Split, cache_dir: Path, mixup: float, cutmix: float, cache: str
) -> None:
    config = DataConfig(cache=cache, augment="standard", batch_size=6, num_workers=0, mixup=mixup, cutmix=cutmix)
    data = ImageDataModule(odd_split, zoo.get_spec("small_cnn"), 28, config)
    torch.manual_seed(0)
    images, targets = next(iter(data.train_dataloader()))
    assert images.shape == (6, 3, 28, 28)
    assert targets.shape == (6, len(odd_split.classes))
    assert torch.allclose(targets.sum(dim=1), torch.ones(6))
    assert bool((targets >= 0).all())
    assert bool((targets.max(dim=1).values < 1).any()), "some images are mixed with another"
    _, val_labels = next(iter(data.val_dataloader()))
    assert val_labels.dim() == 1, "validation keeps hard labels"


@pytest.mark.parametrize("cache", ["memory", "none"])
def test_a_run_trains_with_a_policy_and_mixed_batches(image_folder: Path, tmp_path: Path, cache: str) -> None:
    out = tmp_path / "mixed"
    argv = ["finetune", "--arch", "small_cnn", "--data", str(image_folder), "--weights", "none", "--batch-size", "6",
            "--epochs", "1", "--max-steps", "3", "--augment", "augmix", "--mixup", "0.2", "--cutmix", "1.0",
            "--cache", cache, "--out", str(out)]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["steps"] == 3
    assert summary["config"]["data"]["mixup"] == 0.2
    assert summary["test_top1_error"] is not None


def test_mixing_is_refused_on_cached_features(image_folder: Path, tmp_path: Path, capsys) -> None:
    argv = ["finetune", "--arch", "small_cnn", "--data", str(image_folder), "--weights", "none", "--freeze", "backbone",
            "--mixup", "0.2", "--out", str(tmp_path / "run")]
    assert main(argv) == 2
    assert "add --cache none" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_damaged_feature_cache_entry_is_computed_again(image_folder: Path, tmp_path: Path, cache_dir: Path) -> None:
    argv = ["finetune", "--arch", "small_cnn", "--data", str(image_folder), "--image-size", "28", "--batch-size", "4",
            "--epochs", "1", "--freeze", "backbone", "--cache", "disk"]
    assert main([*argv, "--out", str(tmp_path / "first")]) == 0
    entries = sorted((cache_dir / "features").glob("*.pt"))
    for entry in entries:
        entry.write_bytes(entry.read_bytes()[:100])  # cut off, as by a full disk in an older zoo
    assert main([*argv, "--out", str(tmp_path / "second")]) == 0
    assert all(torch.load(entry, weights_only=True).numel() for entry in entries)
