"""zoo's own cache folder (materialised data sets, measured figures, cached features)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root(cache_dir: Path | None = None) -> Path:
    """``cache_dir``, else ``$ZOO_CACHE``, else ``~/.cache/zoo``."""
    return Path(cache_dir or os.environ.get("ZOO_CACHE") or "~/.cache/zoo").expanduser()
