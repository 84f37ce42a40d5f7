"""Files of zoo's caches (decoded images, backbone features): keys from the data and settings."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

from finetune.data.builtin import cache_root
from finetune.data.scan import Sample


def cache_key(samples: Sequence[Sample], **settings: object) -> str:
    """A digest of ``settings`` and of every file's path, size and modification time, in order.

    A file that is replaced, edited or touched, added or removed gives a new key, so a stale entry is
    never read; its old entry stays until the cache folder is cleared.
    """
    files = []
    for sample in samples:
        stat = sample.path.stat()
        files.append((str(sample.path.absolute()), stat.st_size, stat.st_mtime_ns))
    text = json.dumps({"settings": settings, "files": files}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def cache_path(kind: str, key: str, suffix: str) -> Path:
    """Where the entry ``key`` of the cache ``kind`` lives: ``$ZOO_CACHE/<kind>/<key><suffix>``."""
    return cache_root() / kind / f"{key}{suffix}"
