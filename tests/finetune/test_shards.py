"""LitData shards: zoo data optimize, training that streams them (one and two processes, resumed mid-epoch),
and the bad inputs refused in one line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image

from finetune.data.decoded import Squares
from finetune.data.shards import MANIFEST, load_shards, shard_dataset
from tests.helpers import run_summary, run_table
from zoo_cli.main import main

QUICK = ["--arch", "small_cnn", "--accelerator", "cpu", "--batch-size", "4", "--augment", "none", "--seed", "0",
         "--precision", "32", "--weights", "none"]


@pytest.fixture
def shards(image_folder: Path, tmp_path: Path) -> Path:
    """The default shards: the folder's small (40 px) images stored decoded."""
    out = tmp_path / "shards"
    # Two writers: the chunks must still hold the samples in the split's order.
    assert main(["data", "optimize", str(image_folder), "--out", str(out), "--workers", "2"]) == 0
    return out


@pytest.fixture
def byte_shards(image_folder: Path, tmp_path: Path) -> Path:
    """Shards of the image files' own bytes."""
    out = tmp_path / "byte-shards"
    assert main(["data", "optimize", str(image_folder), "--out", str(out), "--decoded", "none"]) == 0
    return out


def _raw_items(shards: Path, part: str) -> list[dict]:
    dataset = shard_dataset(load_shards(str(shards)), part, None, shuffle=False, seed=0)
    del dataset.transform  # LitData then yields the stored items, nothing decoded
    return list(dataset)


@pytest.mark.parametrize("decoded", ["auto", "none"])
def test_optimize_keeps_the_split_and_every_image(decoded: str, image_folder: Path, tmp_path: Path) -> None:
    from finetune.data.split import split_folder

    shards = tmp_path / "shards"
    # Two writers: the chunks must still hold the samples in the split's order.
    assert main(["data", "optimize", str(image_folder), "--out", str(shards), "--workers", "2", "--decoded",
                 decoded]) == 0
    split, folder = load_shards(str(shards)), split_folder(image_folder)
    assert split.classes == folder.classes
    # Training samples are written in a seeded random order (the folder's is class by class), the others in the
    # split's order.
    assert split.train != folder.train
    assert sorted(split.train, key=str) == sorted(folder.train, key=str)
    for part in ("train", "val", "test"):
        if part != "train":
            assert getattr(split, part) == getattr(folder, part)
        dataset = shard_dataset(split, part, None, shuffle=False, seed=0, alone=True)
        streamed = [dataset[index] for index in range(len(dataset))]
        # The streamed images are the files' own pixels, with their labels, in the manifest's order.
        for (image, label), sample in zip(streamed, getattr(split, part), strict=True):
            assert label == sample.label
            assert np.array_equal(np.asarray(image), np.asarray(Image.open(sample.path).convert("RGB")))
    # The 40 px JPEGs are stored decoded by default (about 4.8 KB of pixels each), as their files' bytes with none.
    heights = {int(item["height"]) for item in _raw_items(shards, "val")}
    assert heights == ({40} if decoded == "auto" else {0})


def test_auto_stores_small_images_decoded_and_large_ones_as_bytes(tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    rng = np.random.default_rng(0)
    sizes = {"small": (96, 96), "wide": (120, 20), "large": (97, 96)}  # 96×96 px at most are decoded
    for name in ("a", "b"):
        (folder / name).mkdir(parents=True)
        for copy, (kind, size) in enumerate([*sizes.items()] * 3):
            pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / name / f"{kind}-{copy}.png")
    shards = tmp_path / "shards"
    assert main(["data", "optimize", str(folder), "--out", str(shards)]) == 0
    split = load_shards(str(shards))
    for part in ("train", "val", "test"):
        samples = getattr(split, part)
        for item in _raw_items(shards, part):
            path = samples[int(item["index"])].path
            kind = path.stem.split("-")[0]
            if kind == "large":
                assert item["height"] == 0
                assert bytes(item["image"]) == path.read_bytes()
            else:
                width, height = sizes[kind]
                assert (item["height"], item["width"]) == (height, width)
        # Either way a run sees the files' own pixels.
        dataset = shard_dataset(split, part, None, shuffle=False, seed=0, alone=True, pixels=True)
        for index, sample in enumerate(samples):
            pixels, label = dataset[index]
            assert label == sample.label
            assert np.array_equal(pixels.permute(1, 2, 0).numpy(), np.asarray(Image.open(sample.path)))


def test_training_batches_mix_the_classes(tmp_path: Path) -> None:
    # More images than LitData's in-chunk shuffle block (256), in a folder sorted class by class.
    folder, per_class = tmp_path / "sorted", 300
    for name in ("a", "b"):
        (folder / name).mkdir(parents=True)
        for index in range(per_class):
            Image.new("RGB", (4, 4), (index % 256, 0, 0)).save(folder / name / f"{index:03d}.png")
    assert main(["data", "optimize", str(folder), "--out", str(tmp_path / "shards")]) == 0
    split = load_shards(str(tmp_path / "shards"))
    dataset = shard_dataset(split, "train", None, shuffle=True, seed=0)
    del dataset.transform  # the raw items: their labels, nothing decoded
    labels = [int(item["label"]) for item in dataset]
    # Every batch of 32 holds both classes: batches of one class teach a network nothing (BatchNorm normalises
    # each batch by its one class).
    assert all(len(set(labels[start:start + 32])) == 2 for start in range(0, len(labels) - 32, 32))


def test_shards_of_an_older_format_are_refused(shards: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = json.loads((shards / MANIFEST).read_text())
    (shards / MANIFEST).write_text(json.dumps({**manifest, "format": 1}))
    assert main(["finetune", "--data", str(shards), *QUICK, "--epochs", "1"]) == 2
    error = capsys.readouterr().err
    assert "written by an older zoo (shard format 1, its training images in class order" in error
    assert "write the shards again with zoo data optimize" in error


def _indices(items: list[dict]) -> list[int]:
    return [int(item["index"]) for item in items]


@pytest.mark.parametrize("workers", [0, 2])
def test_each_process_reads_its_own_share_once_per_epoch(shards: Path, workers: int) -> None:
    from litdata import StreamingDataLoader
    from litdata.utilities.env import _DistributedEnv

    split = load_shards(str(shards))
    seen: list[list[int]] = []
    for rank in (0, 1):  # the two processes of a DDP run, as LitData sees them
        dataset = shard_dataset(split, "train", None, shuffle=True, seed=0)
        dataset.distributed_env = _DistributedEnv(2, rank, 1)
        del dataset.transform  # LitData then yields the raw items, which carry their index in the split
        loader = StreamingDataLoader(dataset, batch_size=2, num_workers=workers, collate_fn=_indices)
        seen.append([index for batch in loader for index in batch])
    everything = seen[0] + seen[1]
    assert len(everything) == len(set(everything)), "a sample was read twice in one epoch"
    # Both take the same number of whole batches (DDP waits on each step's gradients): of the 18 images, fewer than
    # a batch per process is left out of the epoch (LitData's drop_last), none read twice.
    assert len(seen[0]) == len(seen[1])
    assert len(seen[0]) % 2 == 0
    assert len(split.train) - 2 * 2 < len(everything) <= len(split.train)


class _Images(pl.Callback):
    """Counts the training images of each step; with ``stop_at``, interrupts the run there as Ctrl-C would."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.stop_at = stop_at
        self.count = 0

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: object,
                           batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self.count += len(batch[1])
        if trainer.global_step == self.stop_at:
            raise KeyboardInterrupt


def test_finetune_streams_shards_and_resumes_mid_epoch(shards: Path, image_folder: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from finetune.config import RunConfig, merge
    from finetune.training.run import train
    from finetune.training.run_folder import resume_config

    config = merge(RunConfig(), {
        "data": {"path": str(shards), "batch_size": 4, "augment": "none", "num_workers": 0},
        "model": {"arch": "small_cnn", "weights": "none"},
        "trainer": {"epochs": 1, "seed": 0, "accelerator": "cpu", "precision": "32"},
    })
    whole = _Images()
    train(merge(config, {"out": str(tmp_path / "whole")}), watchers=[whole])
    before, after = _Images(stop_at=2), _Images()
    with pytest.raises(SystemExit):  # interrupted (Ctrl-C) in the middle of the epoch; last.ckpt saved there
        train(merge(config, {"out": str(tmp_path / "run")}), watchers=[before])
    out = tmp_path / "run"
    train(resume_config(out, {}), resume=out, watchers=[after])
    # Continued where it stopped: the epoch's images once in all, not the epoch read again from its start.
    assert (before.count, before.count + after.count) == (8, whole.count)
    summary = run_summary(out)
    assert summary["steps"] == run_summary(tmp_path / "whole")["steps"]
    assert summary["num_train"] == 18
    assert len(run_table(out, "test_predictions.csv")) == summary["num_test"] == 3
    # zoo evaluate reads the shards as it reads a folder: the same figures on the same images.
    shutil.move(image_folder, tmp_path / "elsewhere")  # the original files are not needed
    assert main(["evaluate", str(out), "--data", str(shards), "--out", str(tmp_path / "eval")]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["split"] == "test"
    assert metrics["num_images"] == 3
    assert metrics["top1_error"] == run_summary(out)["test_top1_error"]
    assert (tmp_path / "eval" / "top_losses.png").is_file()
    # Without --data, a run trained on shards is measured on them.
    assert main(["evaluate", str(out), "--out", str(tmp_path / "own")]) == 0
    assert json.loads((tmp_path / "own" / "metrics.json").read_text()) == metrics


@pytest.mark.slow
def test_two_nodes_on_shards_measure_as_one_process(shards: Path, tmp_path: Path) -> None:
    import socket

    from finetune.results.evaluate import model_logits
    from finetune.results.heldout import error_rates
    from finetune.shipping.sources import load_checkpoint

    with socket.socket() as probe:  # a free port for the nodes to meet on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "zoo_cli.main", "finetune", "--data", str(shards), *QUICK, "--strategy", "ddp",
               "--epochs", "1"]
    # As on a cluster: the same command on every node, told its rank and where node 0 listens.
    nodes = [subprocess.Popen([*command, "--num-nodes", "2", "--devices", "1", "--out", str(tmp_path / "nodes")],
                              env={**os.environ, "NODE_RANK": str(rank), "MASTER_ADDR": "127.0.0.1",
                                   "MASTER_PORT": str(port)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    ended = [node.communicate(timeout=600) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], [err[-1500:] for _, err in ended]
    [row] = run_table(tmp_path / "nodes", "metrics.csv")
    # Validation shared by the two processes (one per node) gives the figures of one process measuring the same
    # checkpoint (two processes on one node take the same path: tests/finetune/test_run.py checks they end alike).
    val = load_shards(str(shards)).val
    logits, labels = model_logits(load_checkpoint(tmp_path / "nodes" / "best.ckpt"), val, batch_size=8)
    by_hand = error_rates(logits, labels)
    assert float(row["val/top1_error"]) == pytest.approx(by_hand.top1_error, abs=1e-3)
    assert float(row["val/loss"]) == pytest.approx(by_hand.loss, abs=1e-4)
    summary = run_summary(tmp_path / "nodes")
    # 18 images, 2 processes, batches of 4: 2 steps of 8 images, every test image measured once on rank 0.
    assert summary["num_val"] == len(val)
    assert summary["steps"] == 2
    assert len(run_table(tmp_path / "nodes", "test_predictions.csv")) == summary["num_test"] == 3


def test_a_folder_that_is_not_zoo_shards_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "index.json").write_text(json.dumps({"chunks": [], "config": {}}))
    assert main(["finetune", "--data", str(foreign), *QUICK, "--out", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err.strip()
    assert "LitData chunks without zoo's manifest" in error
    assert "zoo data optimize" in error
    assert len(error.splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_a_damaged_chunk_is_refused_before_any_work(shards: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    chunk = next((shards / "train").glob("chunk-*.bin"))
    chunk.write_bytes(chunk.read_bytes()[:-100])  # a copy cut short
    assert main(["finetune", "--data", str(shards), *QUICK, "--out", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err.strip()
    assert f"chunk {chunk}" in error
    assert "damaged" in error
    assert len(error.splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_damaged_image_bytes_in_a_chunk_name_the_sample(byte_shards: Path) -> None:
    from finetune.data.scan import DataError

    shards = byte_shards
    chunk = next((shards / "val").glob("chunk-*.bin"))
    content = bytearray(chunk.read_bytes())
    start = content.index(b"\xff\xd8\xff")  # the first JPEG's header, overwritten in place (same size)
    content[start:start + 64] = bytes(64)
    chunk.write_bytes(bytes(content))
    dataset = shard_dataset(load_shards(str(shards)), "val", None, shuffle=False, seed=0, alone=True)
    with pytest.raises(DataError, match="sample 0 of .*val is not a readable image .*damaged"):
        dataset[0]


def test_an_unreachable_url_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = "s3://zoo-no-such-bucket-for-tests/shards"
    assert main(["finetune", "--data", url, *QUICK, "--out", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err.strip()
    assert f"cannot read {url}/{MANIFEST}" in error
    assert "check the URL" in error
    assert "credentials" in error
    assert len(error.splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_optimize_refuses_a_folder_that_holds_files(image_folder: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["data", "optimize", str(image_folder), "--out", str(out)]) == 2
    assert "already holds files" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "mine"


def test_cache_on_shards_is_refused_and_auto_streams(shards: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["finetune", "--data", str(shards), *QUICK, "--cache", "memory", "--out", str(tmp_path / "r")]) == 2
    assert "streaming from shards avoids" in capsys.readouterr().err


def test_clean_names_the_image_folder_the_shards_came_from(shards: Path, image_folder: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["clean", str(shards), "--out", str(tmp_path / "clean")]) == 2
    error = capsys.readouterr().err.strip()
    assert f"zoo clean reads image files, not shards: pass {image_folder}, the folder {shards}" in error
    assert len(error.splitlines()) == 1
    assert not (tmp_path / "clean").exists()


def test_split_fractions_on_shards_are_refused_before_any_work(shards: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r"
    assert main(["finetune", "--data", str(shards), *QUICK, "--val-fraction", "0.3", "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert f"--val-fraction 0.3 cannot change the split of the shards {shards}" in error
    assert "zoo data optimize IMAGES --out NEW --val-fraction 0.3" in error
    assert len(error.splitlines()) == 1
    assert not out.exists()
    assert load_shards(str(shards)).fractions == {"val_fraction": 0.15, "test_fraction": 0.15}  # as written


def test_decoded_shards_hold_the_folder_caches_squares_and_train(image_folder: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from torchvision.transforms import InterpolationMode

    from finetune.data.decoded import decode_square

    shards = tmp_path / "decoded"
    assert main(["data", "optimize", str(image_folder), "--out", str(shards), "--decoded", "36"]) == 0
    split = load_shards(str(shards))
    assert split.decoded == 36
    pixels, label = shard_dataset(split, "val", None, shuffle=False, seed=0, alone=True, pixels=True)[0]
    # The pixels the folder's decode-once cache holds for 32 px crops of this (square) image.
    (square,) = Squares(36, 32).of([pixels])
    assert torch.equal(square, decode_square(split.val[0].path, 36, 32, InterpolationMode.BILINEAR))
    assert label == split.val[0].label
    picture, _ = shard_dataset(split, "val", None, shuffle=False, seed=0, alone=True)[0]  # for pictures: an image
    assert picture.size == (36, 36)
    out = tmp_path / "run"
    assert main(["finetune", "--data", str(shards), *QUICK, "--image-size", "32", "--epochs", "1",
                 "--out", str(out)]) == 0
    assert "decoded when they were written (36 px squares)" in capsys.readouterr().out
    assert len(run_table(out, "test_predictions.csv")) == run_summary(out)["num_test"] == len(split.test)
    assert main(["evaluate", str(out), "--out", str(tmp_path / "eval")]) == 0
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["num_images"] == len(split.test)


@pytest.mark.parametrize("decoded", [True, False])
def test_shards_stream_the_folder_caches_squares(decoded: bool, shards: Path, byte_shards: Path) -> None:
    from torchvision.transforms import InterpolationMode

    from finetune.data.decoded import decode_square

    split = load_shards(str(shards if decoded else byte_shards))
    dataset = shard_dataset(split, "train", None, shuffle=False, seed=0, alone=True, pixels=True)
    samples = [dataset[index] for index in range(len(split.train))]
    # Decoded when written or as it streams, and resized batch by batch (images of one size together) to the very
    # pixels the folder's decode-once cache holds: batches are then cropped alike, whichever the data came from.
    squares = Squares(40, 32, "bicubic").of([pixels for pixels, _ in samples])
    for index in (0, len(split.train) - 1):
        assert torch.equal(squares[index], decode_square(split.train[index].path, 40, 32, InterpolationMode.BICUBIC))
        assert samples[index][1] == split.train[index].label


def test_decoded_squares_too_small_are_refused(image_folder: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "optimize", str(image_folder), "--out", str(tmp_path / "s"), "--decoded", "4"]) == 2
    assert "--decoded 4 is too small to train on" in capsys.readouterr().err
    assert main(["data", "optimize", str(image_folder), "--out", str(tmp_path / "s"), "--decoded", "100000"]) == 2
    assert "at most 1024 px" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
