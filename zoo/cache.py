"""zoo's own cache folder (materialised data sets, measured figures, cached features)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from zoo._io import DiskError, write_text_atomic


def cache_root(cache_dir: Path | None = None) -> Path:
    """``cache_dir``, else ``$ZOO_CACHE``, else ``~/.cache/zoo``."""
    return Path(cache_dir or os.environ.get("ZOO_CACHE") or "~/.cache/zoo").expanduser()


def read_figures(name: str) -> dict[str, Any]:
    """The measured figures kept in ``$ZOO_CACHE/name`` (a JSON object); empty when missing or unreadable."""
    try:
        entries = json.loads((cache_root() / name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return entries if isinstance(entries, dict) else {}


def write_figures(name: str, entries: dict[str, Any]) -> None:
    """Keep ``entries`` in ``$ZOO_CACHE/name``. Best effort: a read-only cache folder only costs the measurement
    next time."""
    try:
        write_text_atomic(cache_root() / name, json.dumps(entries))
    except DiskError:
        pass
