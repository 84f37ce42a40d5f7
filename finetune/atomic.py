"""Atomic file writes: a file under its final name is always complete."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield ``path.tmp`` to write; it becomes ``path`` only when the block finishes without error."""
    temporary = path.with_name(path.name + ".tmp")
    try:
        yield temporary
    except BaseException:  # an interrupted write (Ctrl-C included) must not leave a half file
        temporary.unlink(missing_ok=True)
        raise
    os.replace(temporary, path)


def write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
