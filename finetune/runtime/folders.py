"""Output folders, checked before the work whose files they will hold, so a bad ``--out`` costs no work."""

from __future__ import annotations

import os
from pathlib import Path

from zoo.errors import ZooError


def check_out_folder(out: Path) -> None:
    """Refuse ``out`` when it is a file, lies under a file, or lies in a folder zoo cannot write to."""
    out = Path(out)
    existing = next(folder for folder in (out, *out.absolute().parents) if folder.exists())
    if existing == out and not out.is_dir():
        raise ZooError(f"--out {out} is a file: pass a folder (a new one, or one to add the files to)")
    if not existing.is_dir():
        raise ZooError(f"--out {out} cannot be made: {existing} is a file; choose another --out")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ZooError(f"--out {out} cannot be written: {existing} is read-only for you; choose another --out")
