"""Any timm model as a registry entry, by name: ``timm/<name>[.<pretrained tag>]``."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor, nn

from zoo.errors import UnknownModelError, WeightsError
from zoo.spec import ArchSpec, WeightsInfo
from zoo.weights import fetch, read_state_dict

HF_ENDPOINT = "https://huggingface.co"


@dataclass(frozen=True)
class TimmWeights:
    """The pretrained tags timm knows for a model, read from the Hugging Face hub's cache."""

    model_name: str
    preferred_tag: str | None = None

    def _repos(self) -> dict[str, str]:
        import timm

        repos = {}
        for full_name in timm.list_pretrained(f"{self.model_name}.*"):
            repo = getattr(timm.models.get_pretrained_cfg(full_name), "hf_hub_id", None)
            if repo:
                repos[full_name.partition(".")[2]] = repo
        return repos

    def available(self) -> tuple[WeightsInfo, ...]:
        return tuple(
            WeightsInfo(tag, f"{HF_ENDPOINT}/{repo}/resolve/main/model.safetensors", _hub_cache_path(repo))
            for tag, repo in self._repos().items()
        )

    @property
    def default_tag(self) -> str:
        tags = list(self._repos())
        if not tags:
            raise WeightsError(f"timm/{self.model_name} has no pretrained weights on the hub: "
                               "use --weights none or a file")
        return self.preferred_tag or tags[0]

    def state_dict(self, tag: str) -> dict[str, Tensor]:
        repos = self._repos()
        if tag not in repos:
            raise WeightsError(f"timm/{self.model_name} has no weights tagged '{tag}' "
                               f"(available: {', '.join(repos) or 'none'})")
        info = next(info for info in self.available() if info.tag == tag)

        def download(_: WeightsInfo) -> Path:
            from huggingface_hub import hf_hub_download

            return Path(hf_hub_download(repos[tag], "model.safetensors"))

        return read_state_dict(fetch(info, f"timm/{self.model_name}", download))

    def adapt(self, state_dict: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
        return state_dict  # the hub's files hold timm's own keys


def _hub_cache_path(repo: str) -> Path:
    """Where huggingface_hub keeps ``model.safetensors`` of ``repo`` (the file zoo reads offline)."""
    home = Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME", "~/.cache/huggingface")) / "hub")
    folder = home.expanduser() / f"models--{repo.replace('/', '--')}"
    snapshots = sorted((folder / "snapshots").glob("*/model.safetensors"))
    return snapshots[-1] if snapshots else folder / "snapshots" / "<revision>" / "model.safetensors"


def count_weighted_layers(model: nn.Module) -> int:
    """Layers with weights (convolutions and fully connected layers) — a timm model's derived depth."""
    return sum(isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)) for m in model.modules())


@functools.lru_cache(maxsize=64)
def timm_spec(model_name: str) -> ArchSpec:
    """The entry of timm's ``model_name``; its figures come from timm's pretrained config."""
    import timm
    import torch

    base, _, tag = model_name.partition(".")
    if not timm.is_model(base):
        raise UnknownModelError(f"timm/{model_name}", (f"timm/{n}" for n in timm.list_models()))
    config = timm.models.get_pretrained_cfg(model_name) or timm.models.get_pretrained_cfg(base)

    def build() -> nn.Module:
        return timm.create_model(model_name, pretrained=False)

    with torch.device("meta"):
        depth = count_weighted_layers(build())
    settings = config.to_dict() if config is not None else {}
    return ArchSpec(
        name=f"timm/{model_name}",
        family=base.rstrip("0123456789_"),
        depth=depth,
        year=None,
        build=build,
        head=settings.get("classifier", "head"),
        input_size=settings.get("input_size", (3, 224, 224))[-1],
        mean=tuple(settings.get("mean", (0.485, 0.456, 0.406))),
        std=tuple(settings.get("std", (0.229, 0.224, 0.225))),
        interpolation=settings.get("interpolation", "bilinear"),
        crop_fraction=settings.get("crop_pct", 0.875),
        weights=TimmWeights(base, tag or None),
        description="timm model (depth counts its conv and linear layers)",
        library="timm", library_name=base,
    )
