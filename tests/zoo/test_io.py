"""zoo/_io.py: writes that a full disk, an error or an interruption cannot leave half done."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from zoo import _io
from zoo._io import DiskError, remove_temporaries, replacing_folder, write_atomic, write_text_atomic


def test_a_failed_write_keeps_the_previous_file_and_says_where_in_one_line(tmp_path: Path) -> None:
    target = tmp_path / "summary.json"
    write_text_atomic(target, "old")

    def disk_full(temporary: Path) -> None:
        temporary.write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(DiskError) as error:
        write_atomic(target, disk_full)
    message = str(error.value)
    assert "\n" not in message
    assert "No space left on device" in message
    assert str(tmp_path) in message
    assert target.read_text() == "old"
    assert [path.name for path in tmp_path.iterdir()] == ["summary.json"]


def _bundle(folder: Path, text: str) -> None:
    folder.mkdir()
    (folder / "zoo.json").write_text(text)


def test_a_replaced_folder_survives_a_failure_inside_the_block(tmp_path: Path) -> None:
    _bundle(tmp_path / "bundle", "old")
    def fail_inside() -> None:
        with replacing_folder(tmp_path / "bundle") as staging:
            (staging / "zoo.json").write_text("new")
            raise ValueError("the check failed")

    with pytest.raises(ValueError, match="the check failed"):
        fail_inside()
    assert (tmp_path / "bundle" / "zoo.json").read_text() == "old"
    assert len(list(tmp_path.iterdir())) == 1
    with replacing_folder(tmp_path / "bundle") as staging:
        (staging / "zoo.json").write_text("new")
    assert (tmp_path / "bundle" / "zoo.json").read_text() == "new"
    assert len(list(tmp_path.iterdir())) == 1


def test_ctrl_c_between_the_two_renames_puts_the_old_folder_back(tmp_path: Path, monkeypatch) -> None:
    _bundle(tmp_path / "bundle", "old")
    real_replace, calls = os.replace, []

    def interrupted(source, target):
        calls.append(source)
        if len(calls) == 2:  # the old folder is aside, the new one not yet in
            raise KeyboardInterrupt
        real_replace(source, target)

    monkeypatch.setattr(_io.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt), replacing_folder(tmp_path / "bundle") as staging:
        (staging / "zoo.json").write_text("new")
    monkeypatch.undo()
    assert (tmp_path / "bundle" / "zoo.json").read_text() == "old"
    assert len(list(tmp_path.iterdir())) == 1


def test_a_kill_between_the_renames_is_repaired_by_the_next_replace(tmp_path: Path) -> None:
    _bundle(tmp_path / ".bundle.tmp-previous", "old")  # where kill -9 left the old bundle
    with pytest.raises(ValueError, match="this export fails too"), replacing_folder(tmp_path / "bundle"):
        raise ValueError("this export fails too")
    assert (tmp_path / "bundle" / "zoo.json").read_text() == "old"
    assert len(list(tmp_path.iterdir())) == 1


def test_leftovers_of_a_killed_process_are_removed(tmp_path: Path) -> None:
    (tmp_path / ".last.tmp-99-abc.ckpt").write_bytes(b"half")
    (tmp_path / ".bundle.tmp-99-abc").mkdir()
    (tmp_path / "last.ckpt").write_bytes(b"whole")
    (tmp_path / ".bundle.tmp-previous").mkdir()  # set aside by replacing_folder: maybe the only copy, kept
    assert len(remove_temporaries(tmp_path)) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [".bundle.tmp-previous", "last.ckpt"]


def test_a_real_write_limit_during_torch_save_is_a_disk_error_not_a_runtime_error(tmp_path: Path) -> None:
    import subprocess
    import sys

    # RLIMIT_FSIZE with SIGXFSZ ignored: writes past 64 KiB fail with EFBIG, as writes to a full disk fail with
    # ENOSPC. torch's own zip writer would report it as a RuntimeError without an errno.
    script = f"""
import resource, signal, sys, torch
from zoo._io import DiskError, save_atomic
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))
try:
    save_atomic({{"weight": torch.zeros(100_000)}}, __import__("pathlib").Path({str(tmp_path / "big.ckpt")!r}))
except DiskError as error:
    print(error)
    sys.exit(0)
sys.exit(1)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "cannot write big.ckpt" in result.stdout
    assert "File too large" in result.stdout
    assert list(tmp_path.iterdir()) == []


def test_a_staging_folder_left_by_a_killed_export_is_removed_by_the_next(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a process id that no longer runs, as after a kill -9
    left = tmp_path / f".bundle.tmp-{dead.pid}-0123abcd"
    (left / "model.onnx").parent.mkdir()
    (left / "model.onnx").write_bytes(bytes(1000))
    mine = tmp_path / f".bundle.tmp-{os.getpid()}-4567cdef"  # a running export's: left alone
    mine.mkdir()
    with replacing_folder(tmp_path / "bundle") as staging:
        (staging / "zoo.json").write_text("{}")
    assert not left.exists()
    assert mine.is_dir()
    assert (tmp_path / "bundle" / "zoo.json").is_file()
