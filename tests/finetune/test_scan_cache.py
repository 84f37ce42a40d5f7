"""The scan's cache: a second scan of an unchanged folder decodes nothing; changed files are checked again."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import pytorch_lightning as pl

from finetune.data import scan


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The files the scan decodes (check_image itself runs, and is recorded)."""
    seen: list[Path] = []
    check = scan.check_image

    def recorded(path: Path) -> str | None:
        seen.append(path)
        return check(path)

    monkeypatch.setattr(scan, "check_image", recorded)
    return seen


def test_a_second_scan_decodes_only_changed_files(image_folder: Path, decoded: list[Path]) -> None:
    first = scan.scan_folder(image_folder)
    assert len(decoded) == 24
    decoded.clear()
    assert scan.scan_folder(image_folder) == first
    assert decoded == []
    touched = image_folder / "coffee" / "3.jpg"
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))  # edited: a new mtime
    damaged = image_folder / "chelsea" / "5.jpg"
    damaged.write_bytes(damaged.read_bytes()[:200])  # cut short: a new size
    again = scan.scan_folder(image_folder)
    assert sorted(decoded) == sorted([touched, damaged])
    assert [file.path for file in again.skipped] == [damaged]
    assert len(again.samples) == 23
    decoded.clear()
    (image_folder / "astronaut" / "new.png").write_bytes((image_folder / "astronaut" / "0.jpg").read_bytes())
    assert len(scan.scan_folder(image_folder).samples) == 24
    assert decoded == [image_folder / "astronaut" / "new.png"]


def test_an_unwritable_cache_only_costs_checking_again(image_folder: Path, decoded: list[Path], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder should be")
    monkeypatch.setenv("ZOO_CACHE", str(blocked))
    assert len(scan.scan_folder(image_folder).samples) == 24
    assert len(scan.scan_folder(image_folder).samples) == 24
    assert len(decoded) == 48


class _Damages(pl.Callback):
    """Cuts ``path`` short after the first training step: the folder changes during the run."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        if trainer.global_step == 1:
            self.path.write_bytes(self.path.read_bytes()[:100])


def test_a_folder_changed_during_a_run_names_the_file_and_the_next_scan_skips_it(image_folder: Path,
                                                                                 tmp_path: Path) -> None:
    from finetune.config import RunConfig, merge
    from finetune.data.images import UnreadableImageError
    from finetune.training.run import train

    damaged = image_folder / "coffee" / "2.jpg"
    config = merge(RunConfig(), {
        "data": {"path": str(image_folder), "batch_size": 4, "augment": "none", "num_workers": 0, "cache": "none"},
        "model": {"arch": "small_cnn", "weights": "none"},
        "trainer": {"epochs": 2, "seed": 0, "accelerator": "cpu", "precision": "32"},
        "out": str(tmp_path / "run"),
    })
    with pytest.raises(UnreadableImageError) as raised:
        train(config, watchers=[_Damages(damaged)])
    message = str(raised.value)
    assert f"cannot read {damaged}" in message
    assert "the file changed since" in message
    assert "zoo finetune --resume" in message
    assert len(message.splitlines()) == 1
    # Its size changed, so the next scan checks it again rather than trusting the verdict it had.
    assert [file.path for file in scan.scan_folder(image_folder).skipped] == [damaged]
