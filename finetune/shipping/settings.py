"""The settings of ``zoo predict``, ``zoo export`` and ``zoo serve``, free of torch: the CLI makes its flags from
them and the functions take their defaults from them."""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from finetune.config import option
from finetune.names import EXPORT_FORMATS, TTA_HELP
from zoo.tta import TtaMode

UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "ki": 2**10, "mi": 2**20, "gi": 2**30}
SIZE = re.compile(r"(\d+)\s*(k|m|g|ki|mi|gi)?b?", re.IGNORECASE)


def byte_count(text: str) -> int:
    """``20MB`` (10**6), ``512KiB`` (2**10) or plain bytes, as a number of bytes."""
    match = SIZE.fullmatch(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"'{text}' is not a size: give bytes, or a number with KB, MB, GB, KiB, MiB "
                                         "or GiB")
    return int(match[1]) * UNITS[(match[2] or "").lower()]


def byte_text(count: int) -> str:
    """``count`` bytes as ``byte_count`` reads them back: ``20MB``, ``512KiB``, or plain bytes."""
    for unit, size in sorted(UNITS.items(), key=lambda item: -item[1]):
        if size > 1 and count % size == 0:
            return f"{count // size}{unit[0].upper()}{unit[1:]}B"
    return str(count)


@dataclass(frozen=True)
class PredictSettings:
    """How ``predict`` runs and what ``zoo predict`` prints."""

    top_k: int = option(5, "classes per image (at most the model's)")
    format: Literal["table", "json", "csv"] = option("table", "")
    batch_size: int = option(32, "")
    tta: TtaMode | None = option(None, TTA_HELP)


@dataclass(frozen=True)
class ExportSettings:
    """What ``zoo export`` writes, where, and whether it may replace a bundle."""

    format: str = option("all", "file to add to the bundle's weights and zoo.json (default: all)",
                         choices=(*EXPORT_FORMATS, "all"))
    out: Path | None = option(None, "bundle folder (new or empty)", metavar="DIR", required=True)  # None: not yet given
    force: bool = option(False, "replace the bundle in --out (a folder holding a bundle's files only)")


@dataclass(frozen=True)
class ListenSettings:
    """Where ``serve`` listens, and how many processes answer."""

    host: str = option("127.0.0.1", "address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 for every "
                                    "network)")
    port: int = option(8000, "port (default: 8000; 0: any free port, printed)")
    workers: int = option(1, "server processes, each with its own copy of the model (default: 1)")


@dataclass(frozen=True)
class ServeSettings:
    """What each server process needs: the model's source and the request limits."""

    source: str
    max_batch_size: int = option(32, "most images run together when requests arrive faster than the model answers "
                                     "(default: 32)")
    max_bytes: int = option(20 * 10**6, "largest upload accepted, e.g. 20MB or 512KiB (default: 20MB)",
                            type=byte_count)
    threads: int | None = None  # torch's intra-op threads per process; None: torch's default (every core)
    tta: TtaMode | None = option(None, TTA_HELP)  # None: the model's own
