"""The scan's verdicts kept between runs: an unchanged file (same path, size and modification time) is not
decoded again, so a second run on a large folder reaches its first step in the time it takes to list it."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import PIL

from zoo._io import DiskError, write_text_atomic
from zoo.cache import cache_root

# Bump when check_image judges files differently: verdicts of an older checker are not reused.
CHECKER_VERSION = 1


def _entry_file(root: Path) -> Path:
    digest = hashlib.sha256(str(root).encode()).hexdigest()[:32]
    return cache_root() / "scan" / f"{digest}.json"


def _signature(path: Path) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:  # a broken link or a vanished file: check_image says which
        return None
    return stat.st_size, stat.st_mtime_ns


def _relative(paths: Sequence[Path], root: Path) -> list[str]:
    """``paths`` relative to ``root``: the scan builds every path from ``root``, so mostly by cutting it off
    (relpath took half the time of a second scan)."""
    prefix = os.path.join(root, "")
    texts = [str(path) for path in paths]
    return [text[len(prefix):] if text.startswith(prefix) else os.path.relpath(text, root) for text in texts]


def cached_checks(root: Path, paths: Sequence[Path],
                  check: Callable[[Sequence[Path]], list[str | None]]) -> list[str | None]:
    """Each file's verdict (None: a good image, else why not): from the cache of ``root`` where the file is
    unchanged, from ``check`` for the rest; the cache is then updated. A cache that cannot be read or written
    only costs the time of checking again."""
    store = _entry_file(root)
    known = _read(store)
    signatures = [_signature(path) for path in paths]
    names = _relative(paths, root)
    verdicts: list[str | None] = [None] * len(paths)
    unknown: list[int] = []
    for index, (name, signature) in enumerate(zip(names, signatures, strict=True)):
        entry = known.get(name) if signature is not None else None
        if entry is not None and (entry[0], entry[1]) == signature:
            verdicts[index] = entry[2]
        else:
            unknown.append(index)
    for index, verdict in zip(unknown, check([paths[index] for index in unknown]), strict=True):
        verdicts[index] = verdict
    if unknown or len(known) != len(paths):
        entries = {name: [*signature, verdict]
                   for name, signature, verdict in zip(names, signatures, verdicts, strict=True)
                   if signature is not None}
        try:
            write_text_atomic(store, json.dumps({"checker": _checker(), "files": entries}))
        except (DiskError, OSError):
            pass  # a read-only or full cache folder: the next run checks again
    return verdicts


def _checker() -> str:
    # PIL decides what decodes; another version may read a file this one refused.
    return f"{CHECKER_VERSION}/{PIL.__version__}"


def _read(store: Path) -> dict[str, list]:
    try:
        content = json.loads(store.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(content, dict) or content.get("checker") != _checker():
        return {}
    files = content.get("files")
    return files if isinstance(files, dict) else {}
