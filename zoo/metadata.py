"""What ``zoo list``, ``zoo info`` and ``zoo weights`` show of the classic entries, kept as data so that they run
without importing torch (which costs seconds): each network's parameters, FLOPs and stages, and torchvision's
metadata of its weights.

The figures are derived from the real models, never typed in: ``python -m zoo.metadata`` measures them again
and rewrites ``metadata.json``, and a test checks the file against the models. A file made with other versions of
torch or torchvision is not used: the figures are then measured as before.
"""

from __future__ import annotations

import functools
import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

FILE = Path(__file__).with_name("metadata.json")
PACKAGES = ("torch", "torchvision", "timm")


def versions() -> dict[str, str]:
    """The installed versions the figures depend on (read without importing the packages)."""
    def installed(package: str) -> str:
        try:
            return version(package)
        except PackageNotFoundError:
            return "-"

    return {package: installed(package) for package in PACKAGES}


@functools.cache
def stored() -> dict[str, Any]:
    """The entries of ``metadata.json`` by name; empty when it was made with other versions or is missing."""
    try:
        content = json.loads(FILE.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return content["entries"] if content.get("versions") == versions() else {}


def profile(name: str) -> dict[str, Any] | None:
    """The stored parameters, GFLOPs and stages of entry ``name`` (``zoo.profile.Profile`` as a dict), or None."""
    entry = stored().get(name)
    return entry["profile"] if entry else None


def torchvision_weights(model_name: str) -> dict[str, Any] | None:
    """torchvision's metadata of ``model_name``'s weights: ``default`` tag and ``tags`` (url, errors, params, GMACs,
    file size, preprocessing), or None."""
    entry = stored().get(model_name)
    return entry.get("torchvision_weights") if entry else None


def measure_all() -> dict[str, Any]:
    """The figures of every classic entry, measured from the real models (imports torch and torchvision)."""
    from dataclasses import asdict

    from zoo.catalog import CLASSIC
    from zoo.profile import measure

    entries: dict[str, Any] = {}
    for spec in CLASSIC:
        entry: dict[str, Any] = {"profile": asdict(measure(spec))}
        stored_weights = spec.weights.stored_metadata() if spec.weights is not None else None
        if stored_weights is not None:  # torchvision's: zoo weights lists them without importing torchvision
            entry["torchvision_weights"] = stored_weights
        entries[spec.name] = entry
    # Through JSON and back: tuples become lists, as in the file.
    return json.loads(json.dumps({"versions": versions(), "entries": entries}))


if __name__ == "__main__":
    FILE.write_text(json.dumps(measure_all(), indent=1) + "\n", encoding="utf-8")
    print(f"wrote {FILE}")
