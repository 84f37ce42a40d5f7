"""Any timm model as a registry entry, by name: ``timm/<name>[.<pretrained tag>]``.

timm decides what it knows: the default tag is its pretrained config's, the preprocessing of each tag comes from
``timm.data.resolve_model_data_config`` of that tag's config, the head paths from the config's ``classifier``,
and the Hugging Face cache is read by ``huggingface_hub`` itself.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.errors import UnknownModelError, WeightsError
from zoo.spec import ArchSpec, Preprocessing, WeightsInfo, rgb
from zoo.weights import fetch, read_state_dict

if TYPE_CHECKING:
    from timm.models import PretrainedCfg
    from torch import Tensor, nn

HF_ENDPOINT = "https://huggingface.co"
WEIGHTS_FILE = "model.safetensors"


def hub_cache() -> Path:
    """The Hugging Face hub cache: ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, read now (huggingface_hub reads them
    once, when it is imported), else huggingface_hub's default."""
    from huggingface_hub import constants

    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path(constants.HF_HUB_CACHE).expanduser()


def hub_repo_folder(repo: str) -> Path:
    """The cache folder of model repository ``repo`` (``models--ORG--NAME``)."""
    from huggingface_hub.file_download import repo_folder_name

    return hub_cache() / repo_folder_name(repo_id=repo, repo_type="model")


def hub_cached_file(repo: str) -> Path | None:
    """``model.safetensors`` of ``repo`` as huggingface_hub finds it in its cache (no network), or None."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, WEIGHTS_FILE, cache_dir=hub_cache())
    return Path(found) if isinstance(found, str) else None


def hub_cache_file(repo: str) -> Path:
    """``hub_cached_file``, else where a file saved by hand is found: a snapshot folder named after the revision
    ``main``."""
    return hub_cached_file(repo) or hub_repo_folder(repo) / "snapshots" / "main" / WEIGHTS_FILE


def data_config(config: PretrainedCfg | None, model: nn.Module | None = None) -> dict[str, Any]:
    """timm's evaluation data config (input_size, interpolation, mean, std, crop_pct) of a pretrained config, or of
    ``model``'s own when there is none."""
    from timm.data import resolve_model_data_config

    return resolve_model_data_config(model, pretrained_cfg=config.to_dict() if config is not None else None)


def data_preprocessing(config: PretrainedCfg) -> Preprocessing:
    """The evaluation preprocessing of one pretrained config, as timm resolves it (resize = ⌊crop / crop_pct⌋)."""
    data = data_config(config)
    crop = int(data["input_size"][-1])
    return Preprocessing(crop, math.floor(crop / data["crop_pct"]), data["interpolation"], rgb(data["mean"]),
                         rgb(data["std"]), data["crop_pct"])


@dataclass(frozen=True)
class TimmWeights:
    """The pretrained tags timm knows for a model whose files are on the Hugging Face hub."""

    model_name: str
    preferred_tag: str | None = None

    def _configs(self) -> dict[str, tuple[str, PretrainedCfg]]:
        """Each tag's Hugging Face repository and pretrained config (tags whose files are elsewhere are left out)."""
        import timm

        configs = {}
        for full_name in timm.list_pretrained(f"{self.model_name}.*"):
            config = timm.models.get_pretrained_cfg(full_name)
            if config is not None and config.hf_hub_id:
                configs[full_name.partition(".")[2]] = (config.hf_hub_id, config)
        return configs

    def available(self) -> tuple[WeightsInfo, ...]:
        return tuple(
            WeightsInfo(tag, f"{HF_ENDPOINT}/{repo}/resolve/main/{WEIGHTS_FILE}", hub_cache_file(repo),
                        preprocessing=data_preprocessing(config))
            for tag, (repo, config) in self._configs().items()
        )

    @property
    def default_tag(self) -> str:
        """The tag named in the entry (``timm/convnext_tiny.fb_in1k``), else timm's own default."""
        import timm

        if self.preferred_tag:
            return self.preferred_tag
        tags = list(self._configs())
        if not tags:
            raise WeightsError(f"timm/{self.model_name} has no pretrained weights on the hub: "
                               "use --weights none or a file")
        default = timm.models.get_pretrained_cfg(self.model_name)
        if default is None or default.tag not in tags:
            raise WeightsError(f"timm's default weights of timm/{self.model_name} are not on the Hugging Face hub: "
                               f"choose a tag with --weights TAG ({', '.join(tags)}), a file, or none")
        return default.tag

    def repo(self, tag: str) -> str:
        """The Hugging Face repository of the weights tagged ``tag``."""
        configs = self._configs()
        if tag not in configs:
            raise WeightsError(f"timm/{self.model_name} has no weights tagged '{tag}' "
                               f"(available: {', '.join(configs) or 'none'})")
        return configs[tag][0]

    def state_dict(self, tag: str) -> dict[str, Tensor]:
        repo = self.repo(tag)
        info = next(info for info in self.available() if info.tag == tag)

        def download(_: WeightsInfo) -> Path:
            from huggingface_hub import hf_hub_download

            return Path(hf_hub_download(repo, WEIGHTS_FILE, cache_dir=hub_cache()))

        return read_state_dict(fetch(info, f"timm/{self.model_name}", download))

    def adapt(self, state_dict: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
        return state_dict  # the hub's files hold timm's own keys


def count_weighted_layers(model: nn.Module) -> int:
    """Layers with weights (convolutions and fully connected layers) — a timm model's derived depth."""
    from torch import nn

    return sum(isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)) for m in model.modules())


@functools.lru_cache(maxsize=64)
def timm_spec(model_name: str) -> ArchSpec:
    """The entry of timm's ``model_name``; its input settings are those of its default (or named) pretrained tag."""
    import timm
    import torch

    base, _, tag = model_name.partition(".")
    if not timm.is_model(base):
        raise UnknownModelError(f"timm/{model_name}", (f"timm/{n}" for n in timm.list_models()))
    config = timm.models.get_pretrained_cfg(model_name) or timm.models.get_pretrained_cfg(base)

    def build() -> nn.Module:
        return timm.create_model(model_name, pretrained=False)

    with torch.device("meta"):
        model = build()
    depth = count_weighted_layers(model)
    # Distilled DeiT names two classifiers, ("head", "head_dist"), whose outputs it averages.
    classifier = config.classifier if config is not None and config.classifier else "head"
    heads = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    data = data_config(config, model)
    return ArchSpec(
        name=f"timm/{model_name}",
        family=base.rstrip("0123456789_"),
        depth=depth,
        year=None,
        build=build,
        head=heads[0],
        other_heads=heads[1:],
        input_size=int(data["input_size"][-1]),
        fixed_input_size=bool(config is not None and config.fixed_input_size),
        mean=rgb(data["mean"]),
        std=rgb(data["std"]),
        interpolation=data["interpolation"],
        crop_fraction=data["crop_pct"],
        weights=TimmWeights(base, tag or None),
        description="timm model (depth counts its conv and linear layers)",
        library="timm", library_name=base,
    )
