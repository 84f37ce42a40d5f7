"""Files written so that a kill, a crash or a full disk never leaves half of one behind."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from zoo.errors import ZooError

TEMPORARY_MARK = ".tmp-"  # in the name of every temporary file zoo writes, so leftovers can be recognised
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class DiskError(ZooError):
    """A file zoo could not write: the disk is full, read-only, or the folder is not writable."""


NOT_REGULAR = "not a regular file (a pipe, socket or device)"


def read_text(path: Path, limit: int = 1 << 28) -> str:
    """The UTF-8 text of the regular file ``path``, read at most ``limit`` bytes deep.

    A FIFO, socket or device with a file's name is refused before a byte is read: reading a FIFO waits for a
    writer that may never come, and ``/dev/zero`` never ends. Raises ``OSError`` (FileNotFoundError, …),
    ``ZooError`` for anything but a regular file or one over ``limit``, ``UnicodeDecodeError`` for binary data.
    """
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # opening a FIFO would block
    with os.fdopen(descriptor, "rb") as file:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            raise ZooError(f"{path} is {NOT_REGULAR}: pass a file")
        if status.st_size > limit:
            raise ZooError(f"{path} is {status.st_size} bytes, more than the {limit} a file of this kind can be")
        return file.read(limit + 1).decode("utf-8")


def write_error(path: Path, error: OSError) -> DiskError:
    """One line for a failed write: what, where, why, and that the previous file is intact."""
    reason = error.strerror or type(error).__name__
    if error.errno in _DISK_FULL:
        fix = f"free space on the disk holding {path.parent}, or choose another folder"
    elif error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = f"make {path.parent} writable or choose another folder"
    else:
        fix = f"check {path.parent}"
    return DiskError(f"cannot write {path.name} in {path.parent}: {reason}; "
                     f"any previous {path.name} is unchanged: {fix}")


def temporary_beside(path: Path) -> Path:
    """A fresh temporary name in ``path``'s own folder (a rename within one filesystem is atomic)."""
    # The suffix is kept: some writers (numpy, matplotlib) go by it.
    return path.with_name(f".{path.stem}{TEMPORARY_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}{path.suffix}")


def _sync_folder(folder: Path) -> None:
    # Windows cannot open a folder, and some filesystems cannot sync one; the rename itself is still atomic.
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write`` on a temporary file beside ``path``, flush it to disk, then rename it over ``path``.

    Readers never see half a file, a kill or a full disk leaves the previous ``path`` intact, and an
    ``OSError`` becomes a one-line ``DiskError`` naming the folder.
    """
    path = Path(path)
    temporary = temporary_beside(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(temporary)
        with temporary.open("rb+") as file:
            os.fsync(file.fileno())
        os.replace(temporary, path)
        _sync_folder(path.parent)
    except OSError as error:
        raise write_error(path, error) from error
    finally:
        temporary.unlink(missing_ok=True)


def write_csv_atomic(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """``write_atomic`` for a CSV file: ``header``, then ``rows``."""
    import csv

    def write(temporary: Path) -> None:
        with temporary.open("w", newline="", encoding="utf-8") as file:
            writer = csv.writer(file)
            writer.writerow(header)
            writer.writerows(rows)

    write_atomic(path, write)


def write_text_atomic(path: Path, text: str) -> None:
    """``write_atomic`` for UTF-8 text."""
    write_atomic(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


def save_atomic(content: object, path: Path) -> None:
    """``torch.save(content)`` through ``write_atomic``.

    Serialised in memory first: torch's zip writer reports a full disk as a RuntimeError with no errno, so
    only Python's own write of the bytes can tell it apart (as Lightning's own save does, for other reasons).
    """
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(content, buffer)
    write_atomic(path, lambda temporary: temporary.write_bytes(buffer.getbuffer()))


@contextmanager
def replacing_folder(folder: Path) -> Iterator[Path]:
    """Yield an empty staging folder beside ``folder``; when the block succeeds it takes ``folder``'s place.

    The old folder is moved aside, the new one renamed in, and only then is the old one deleted, so a
    failure at any point (a full disk, a failed check, Ctrl-C) leaves the previous ``folder`` as it was. A
    kill -9 between the two renames leaves it under a fixed name beside, and the next call puts it back.
    """
    folder = Path(folder)
    _remove_stale_stagings(folder)
    staging = temporary_beside(folder)
    aside = folder.with_name(f".{folder.name}{TEMPORARY_MARK}previous")
    if aside.exists() and not folder.exists():
        os.replace(aside, folder)
    shutil.rmtree(aside, ignore_errors=True)
    try:
        staging.mkdir(parents=True)
        yield staging
        if folder.exists():
            os.replace(folder, aside)
        os.replace(staging, folder)
        _sync_folder(folder.parent)
    except OSError as error:
        raise write_error(folder, error) from error
    finally:
        if aside.exists() and not folder.exists():
            os.replace(aside, folder)
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(aside, ignore_errors=True)


def _remove_stale_stagings(folder: Path) -> None:
    """Delete the staging folders of ``folder`` that a process killed mid-way (kill -9) left beside it."""
    for path in folder.parent.glob(f".{folder.stem}{TEMPORARY_MARK}*"):
        pid = path.name[len(f".{folder.stem}{TEMPORARY_MARK}"):].partition("-")[0]
        if pid.isdigit() and path.is_dir() and not path.is_symlink() and not _running(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


def check_space(folder: Path, needed: int, largest: int) -> None:
    """Refuse, before writing, files of ``needed`` bytes in all (the largest ``largest``) where they cannot fit:
    some writers (ONNX's, in C++) abort the whole process on a full disk instead of raising an error."""
    existing = next(path for path in (folder, *folder.absolute().parents) if path.exists())
    free = shutil.disk_usage(existing).free
    if free < needed:
        raise DiskError(f"{folder} needs about {needed / 2**20:.0f} MB and its disk has {free / 2**20:.0f} MB free: "
                        "free space on it, or choose another folder")
    try:
        import resource
    except ImportError:  # Windows: no such limit
        return
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY and 0 <= limit < largest:
        raise DiskError(f"files of about {largest / 2**20:.0f} MB cannot be written here: this shell limits files to "
                        f"{limit / 2**20:.1f} MB (ulimit -f); raise the limit")


def remove_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files and staging folders a killed zoo process left in ``folder``; the paths removed."""
    removed = []
    for path in Path(folder).glob(f".*{TEMPORARY_MARK}*"):
        if path.name.endswith(f"{TEMPORARY_MARK}previous"):  # a folder replacing_folder set aside: maybe the only copy
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed
