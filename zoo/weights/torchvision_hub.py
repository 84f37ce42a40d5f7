"""torchvision's weights: cached under ``$TORCH_HOME/hub/checkpoints``, each file named with the first hex digits
of its SHA-256 (``resnet18-f37072fd.pth``), the check torch.hub itself makes on download."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from zoo import metadata
from zoo._io import write_atomic
from zoo.errors import WeightsError
from zoo.spec import ArchSpec, Preprocessing, WeightsInfo, rgb
from zoo.weights.loading import fetch, read_state_dict
from zoo.weights.source import InstallPlan, WeightFile, hash_prefix, pick, select_tags, sha256, size_mib

if TYPE_CHECKING:
    from torch import Tensor, nn



def torch_hub_checkpoints() -> Path:
    """The folder torchvision reads weights from first: ``$TORCH_HOME/hub/checkpoints``, found as
    ``torch.hub.get_dir()`` finds it (``$TORCH_HOME``, else ``$XDG_CACHE_HOME/torch``, else ``~/.cache/torch``)."""
    home = os.environ.get("TORCH_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "torch")
    return Path(os.path.expanduser(home)) / "hub" / "checkpoints"


def download(info: WeightsInfo) -> Path:
    """Download ``info``'s file with torch.hub, checking the SHA-256 prefix its name carries."""
    import torch

    url = info.url
    assert url is not None
    prefix = hash_prefix(info.path.name)

    def download_to(partial: Path) -> None:
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
    write_atomic(info.path, download_to)
    return info.path


@dataclass(frozen=True)
class TorchvisionWeights:
    """The weights torchvision publishes for one model."""

    model_name: str

    def _enum(self) -> Any:  # torchvision's WeightsEnum subclass
        from torchvision.models import get_model_weights

        return get_model_weights(self.model_name)

    def available(self) -> tuple[WeightsInfo, ...]:
        """Every tag's figures, from zoo's copy of torchvision's metadata (``zoo.metadata``) without importing it."""
        stored = metadata.torchvision_weights(self.model_name)
        if stored is None:
            return self.measured()
        return tuple(WeightsInfo(tag=entry["tag"], url=entry["url"], path=_cached_path(entry["url"]),
                                 top1_error=entry["top1_error"], top5_error=entry["top5_error"],
                                 num_params=entry["num_params"], gmacs=entry["gmacs"],
                                 preprocessing=_stored_preprocessing(entry["preprocessing"]))
                     for entry in stored["tags"])

    def measured(self) -> tuple[WeightsInfo, ...]:
        """Every tag's figures read from torchvision's weights enum."""
        infos = []
        for weights in self._enum():
            metrics = weights.meta.get("_metrics", {}).get("ImageNet-1K", {})
            infos.append(WeightsInfo(tag=weights.name, url=weights.url, path=_cached_path(weights.url),
                                     top1_error=_error(metrics.get("acc@1")), top5_error=_error(metrics.get("acc@5")),
                                     num_params=weights.meta.get("num_params"), gmacs=weights.meta.get("_ops"),
                                     preprocessing=_torchvision_preprocessing(weights)))
        return tuple(infos)

    @property
    def default_tag(self) -> str:
        stored = metadata.torchvision_weights(self.model_name)
        return stored["default"] if stored is not None else self._enum().DEFAULT.name

    def state_dict(self, tag: str) -> dict[str, Tensor]:
        return read_state_dict(fetch(pick(self.available(), tag, self.model_name), self.model_name, download))

    def adapt(self, state_dict: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
        return state_dict  # torchvision publishes its own models' keys

    def weight_file(self, spec: ArchSpec, info: WeightsInfo, default: bool) -> WeightFile:
        installed = info.cached
        how = "installed" if installed else ("download its URL on a connected machine, then: "
                                             f"zoo weights add {info.path.name}")
        return WeightFile(spec.name, info.tag, default, "torchvision", info.path.name, info.url,
                          hash_prefix(info.path.name), size_mib(info.path) if installed else self._size(info.tag),
                          info.path.parent, installed, how)

    def file_named(self, name: str) -> WeightsInfo | None:
        return next((info for info in self.available() if info.path.name == name), None)

    def plan_install(self, file: Path, spec: ArchSpec, tag: str | None) -> InstallPlan:
        by_name = [info for info in self.available() if info.path.name == file.name and tag in (None, info.tag)]
        info = by_name[0] if by_name else select_tags(spec, tag)[0]
        prefix = hash_prefix(info.path.name)
        if prefix is None:
            raise WeightsError(f"{spec.name}:{info.tag}'s file name {info.path.name} carries no SHA-256 prefix, so "
                               f"{file} cannot be verified: save it as {info.path.name} in {info.path.parent} "
                               "yourself")
        digest = sha256(file)
        if not digest.startswith(prefix):
            raise WeightsError(f"{file} is not {spec.name}:{info.tag}: its SHA-256 starts with {digest[:len(prefix)]}, "
                               f"not {prefix} as {info.path.name} must; download it again from {info.url}")
        return InstallPlan(file, spec.name, info.tag, info.path, digest)

    def stored_metadata(self) -> dict[str, Any]:
        """Every tag's figures, file size and preprocessing as torchvision publishes them (imports torchvision)."""
        sizes = {weights.name: weights.meta.get("_file_size") for weights in self._enum()}
        return {"default": self._enum().DEFAULT.name,
                "tags": [{"tag": info.tag, "url": info.url, "top1_error": info.top1_error,
                          "top5_error": info.top5_error, "num_params": info.num_params, "gmacs": info.gmacs,
                          "file_size_mib": sizes[info.tag],
                          "preprocessing": asdict(info.preprocessing) if info.preprocessing else None}
                         for info in self.measured()]}

    def _size(self, tag: str) -> float | None:
        stored = metadata.torchvision_weights(self.model_name)
        if stored is not None:
            size = next((entry["file_size_mib"] for entry in stored["tags"] if entry["tag"] == tag), None)
        else:
            size = self._enum()[tag].meta.get("_file_size")  # MiB, in torchvision's metadata
        return float(size) if size is not None else None


def _cached_path(url: str) -> Path:
    return torch_hub_checkpoints() / Path(urlparse(url).path).name


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
