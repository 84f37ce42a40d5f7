"""Weights as tensors: a cached or downloaded file read safely, and a state dict fitted to a network with one
message for keys that do not fit."""

from __future__ import annotations

import os
import socket
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from zoo.errors import WeightsError, ZooError, describe_error
from zoo.spec import ArchSpec, Preprocessing, WeightsInfo
from zoo.weights.source import pick

if TYPE_CHECKING:
    from torch import Tensor, nn

NETWORK_PROBE_SECONDS = 5.0
STATE_DICT_KEYS = ("state_dict", "model", "model_state_dict")
FILE_SUFFIXES = frozenset({".pth", ".pt", ".bin", ".safetensors", ".ckpt"})


def reachable(url: str) -> bool:
    """Whether ``url``'s host answers within a few seconds (never, with ``$ZOO_OFFLINE`` set)."""
    if os.environ.get("ZOO_OFFLINE"):
        return False
    host = urlparse(url).hostname or ""
    try:
        socket.create_connection((host, 443), timeout=NETWORK_PROBE_SECONDS).close()
    except OSError:
        return False
    return True


def fetch(info: WeightsInfo, arch: str, download: Callable[[WeightsInfo], Path]) -> Path:
    """Return the local file of ``info``, downloading it first when the network allows."""
    if info.cached:
        return info.path
    missing = (
        f"weights {arch}:{info.tag} are not in the cache and cannot be downloaded here: "
        f"download {info.url} and install it with zoo weights add FILE --arch {arch} --tag {info.tag} "
        f"(or save it as {info.path.name} in {info.path.parent}), "
        f"or pass a local file with --weights PATH, or train from scratch with --weights none"
    )
    if info.url is None or not reachable(info.url):
        raise WeightsError(missing)
    try:
        return download(info)
    except OSError as error:
        raise WeightsError(f"{missing} ({error})") from error


def load_plain(path: Path, problem: str, fix: str, error_type: type[ZooError] = ZooError) -> Any:
    """``torch.load`` with ``weights_only=True``: plain tensors and containers, never code; whatever cannot be
    read so is one line, ``problem: why; fix``."""
    import torch

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any unreadable file gets the same one-line message
        raise error_type(f"{problem}: {describe_error(error)}; {fix}") from error


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """Read a ``.safetensors`` or ``.pth`` state dict (plain, or nested under a common key)."""
    if not path.is_file():
        what = "is not a regular file (a pipe, socket or device)" if path.exists() else "does not exist"
        raise WeightsError(f"weights file {path} {what}: check the path given to --weights")
    fix = "zoo loads only plain tensors: save a state_dict with torch.save or safetensors"
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as error:  # any unreadable file gets the same one-line message
            raise WeightsError(f"cannot read weights file {path}: {describe_error(error)}; {fix}") from error
    content = load_plain(path, f"cannot read weights file {path}", fix, WeightsError)
    import torch

    for key in STATE_DICT_KEYS:
        if isinstance(content, dict) and isinstance(content.get(key), dict):
            content = content[key]
            break
    if not isinstance(content, dict) or not all(isinstance(v, torch.Tensor) for v in content.values()):
        raise WeightsError(f"weights file {path} holds no state_dict of tensors: save model.state_dict()")
    return dict(content)


def key_mismatch(origin: str, target: str, fix: str, groups: Sequence[tuple[str, Sequence[str]]]) -> WeightsError:
    """The one message for tensors that do not fit a network: each non-empty group (missing, unexpected, wrong
    shape…) with its first keys and count."""
    details = "; ".join(f"{label}: {', '.join(keys[:3])}{' …' if len(keys) > 3 else ''} ({len(keys)})"
                        for label, keys in groups if keys)
    return WeightsError(f"{origin} do not fit {target} ({details}): {fix}")


def load_state_dict_into(model: nn.Module, state_dict: dict[str, Tensor], spec: ArchSpec, origin: str) -> None:
    """Load ``state_dict`` strictly; a classifier of another width is skipped (it is replaced anyway)."""
    state_dict = {k.removeprefix("module."): v for k, v in state_dict.items()}
    state_dict = {k: v for k, v in state_dict.items() if not k.startswith(spec.ignored_weight_prefixes)}
    expected = model.state_dict()
    head_prefixes = tuple(f"{head}." for head in spec.heads)
    mismatched = [k for k, v in state_dict.items() if k in expected and expected[k].shape != v.shape]
    if mismatched and all(k.startswith(head_prefixes) for k in mismatched):
        state_dict = {k: v for k, v in state_dict.items() if k not in mismatched}
        expected = {k: v for k, v in expected.items() if k not in mismatched}
        mismatched = []
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    if missing or unexpected or mismatched:
        raise key_mismatch(f"weights from {origin}", spec.name, f"use weights made for {spec.name}",
                           (("missing", missing), ("unexpected", unexpected), ("wrong shape", mismatched)))
    model.load_state_dict(state_dict, strict=False)


def resolve_state_dict(spec: ArchSpec, weights: str, model: nn.Module) -> tuple[dict[str, Tensor], str]:
    """The state dict that ``weights`` names for ``spec`` (``default``, a tag, or a file path), fitted by its
    source to ``model`` (the entry's published network)."""
    path = Path(weights).expanduser()
    if names_file(weights):
        return read_state_dict(path), str(path)
    if spec.weights is None:
        raise WeightsError(f"{spec.name} has no pretrained weights: pass a file with --weights PATH, or --weights none")
    tag = spec.weights.default_tag if weights == "default" else weights
    return spec.weights.adapt(spec.weights.state_dict(tag), model), f"{spec.name}:{tag}"


def names_file(weights: str) -> bool:
    """Whether ``--weights`` names a file (by its suffix, or because it exists) rather than a tag."""
    path = Path(weights).expanduser()
    return path.suffix in FILE_SUFFIXES or path.exists()


def weights_preprocessing(spec: ArchSpec, weights: str | None) -> Preprocessing:
    """The preprocessing ``weights`` were made with (``default`` or a tag); the entry's own for ``None`` (from
    scratch), a file (zoo cannot know what it was trained with) or weights that publish none."""
    if weights is None or spec.weights is None or names_file(weights):
        return spec.preprocessing
    tag = spec.weights.default_tag if weights == "default" else weights
    return pick(spec.weights.available(), tag, spec.name).preprocessing or spec.preprocessing
