"""The scan's cache: a second scan of an unchanged folder decodes nothing; changed files are checked again."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
    assert scan.scan_folder(image_folder) == first and decoded == []
    touched = image_folder / "coffee" / "3.jpg"
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))  # edited: a new mtime
    damaged = image_folder / "chelsea" / "5.jpg"
    damaged.write_bytes(damaged.read_bytes()[:200])  # cut short: a new size
    again = scan.scan_folder(image_folder)
    assert sorted(decoded) == sorted([touched, damaged])
    assert [file.path for file in again.skipped] == [damaged] and len(again.samples) == 23
    decoded.clear()
    (image_folder / "astronaut" / "new.png").write_bytes((image_folder / "astronaut" / "0.jpg").read_bytes())
    assert len(scan.scan_folder(image_folder).samples) == 24 and decoded == [image_folder / "astronaut" / "new.png"]


def test_an_unwritable_cache_only_costs_checking_again(image_folder: Path, decoded: list[Path], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder should be")
    monkeypatch.setenv("ZOO_CACHE", str(blocked))
    assert len(scan.scan_folder(image_folder).samples) == 24
    assert len(scan.scan_folder(image_folder).samples) == 24 and len(decoded) == 48
