"""timm's weights: ``model.safetensors`` of a Hugging Face repository, in the hub cache's layout
(``models--ORG--NAME/refs/main`` and ``snapshots/<revision>/``), where ``huggingface_hub`` finds it.

timm decides what it knows: the default tag is its pretrained config's, and the preprocessing of each tag comes from
``timm.data.resolve_model_data_config`` of that tag's config. No digest is known offline, so a file carried in must
be safetensors whose tensors fit the named model's keys, shapes and kinds of number.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo._io import write_text_atomic
from zoo.errors import WeightsError, describe_error
from zoo.spec import ArchSpec, Preprocessing, WeightsInfo, rgb
from zoo.weights.loading import fetch, key_mismatch, read_state_dict
from zoo.weights.source import InstallPlan, WeightFile, select_tags, sha256, size_mib

if TYPE_CHECKING:
    from timm.models import PretrainedCfg
    from torch import Tensor, nn

HF_ENDPOINT = "https://huggingface.co"
WEIGHTS_FILE = "model.safetensors"
# The revision an installed hub file is filed under when the cache holds no refs/main of its own. huggingface_hub
# resolves the revision "main" through refs/main, or takes it as the snapshot's name when there is none, so a file
# here is found either way; it is no commit hash, and a later download on a connected machine files the real one
# beside it.
OFFLINE_REVISION = "main"
FLOATS = frozenset({"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"})  # safetensors' floating-point dtypes


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


def hub_revision(repo: str) -> str:
    """The revision the cache files ``repo`` under: its own refs/main, else zoo's offline one."""
    ref = hub_repo_folder(repo) / "refs" / "main"
    try:
        revision = ref.read_text(encoding="utf-8").strip()
    except OSError:
        return OFFLINE_REVISION
    return revision if revision and "/" not in revision and revision not in {".", ".."} else OFFLINE_REVISION


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
            WeightsInfo(tag, f"{HF_ENDPOINT}/{repo}/resolve/main/{WEIGHTS_FILE}", _cache_file(repo),
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

    def weight_file(self, spec: ArchSpec, info: WeightsInfo, default: bool) -> WeightFile:
        repo = self.repo(info.tag)
        cached = hub_cached_file(repo)
        how = "installed" if cached else ("download its URL on a connected machine, then: "
                                          f"zoo weights add {WEIGHTS_FILE} --arch timm/{self.model_name}.{info.tag}")
        folder = cached.parent if cached else hub_repo_folder(repo) / "snapshots" / hub_revision(repo)
        return WeightFile(spec.name, info.tag, default, "hugging face", WEIGHTS_FILE, info.url, None,
                          size_mib(cached) if cached else None, folder, cached is not None, how, repo=repo)

    def file_named(self, name: str) -> None:
        return None  # every repository's file is model.safetensors: only --arch tells which

    def plan_install(self, file: Path, spec: ArchSpec, tag: str | None) -> InstallPlan:
        from zoo.registry import get_spec

        info = select_tags(spec, tag)[0]
        name = f"timm/{self.model_name}.{info.tag}"
        repo = self.repo(info.tag)
        shapes = _safetensors_shapes(file)
        expected = _model_shapes(get_spec(name))
        common = set(shapes) & set(expected)
        # Right keys and shapes but integers where the model holds floats (int8 data): the model would run on garbage.
        groups = (("missing", sorted(set(expected) - set(shapes))), ("unexpected", sorted(set(shapes) - set(expected))),
                  ("wrong shape", sorted(k for k in common if shapes[k][0] != expected[k][0])),
                  ("integers for floating-point values, or the reverse",
                   sorted(k for k in common if shapes[k][1] != expected[k][1])))
        if any(keys for _, keys in groups):
            raise key_mismatch(f"the tensors of {file}", name, f"use {WEIGHTS_FILE} from {repo}", groups)
        target = hub_repo_folder(repo) / "snapshots" / hub_revision(repo) / WEIGHTS_FILE
        return InstallPlan(file, name, info.tag, target, sha256(file), after=lambda: _file_revision(repo, target))

    def stored_metadata(self) -> None:
        return None  # timm's own registry answers without a download


def _cache_file(repo: str) -> Path:
    """``hub_cached_file``, else where a file saved by hand is found: a snapshot folder named after the revision
    ``main``."""
    return hub_cached_file(repo) or hub_repo_folder(repo) / "snapshots" / OFFLINE_REVISION / WEIGHTS_FILE


def _safetensors_shapes(file: Path) -> dict[str, tuple[tuple[int, ...], bool]]:
    """Each tensor's shape, and whether it holds floating-point numbers, from the file's header."""
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt") as reader:  # reads the header only, not the tensors
            return {key: (tuple(reader.get_slice(key).get_shape()), reader.get_slice(key).get_dtype() in FLOATS)
                    for key in reader.keys()}
    except Exception as error:  # any unreadable file gets the same one-line message
        raise WeightsError(f"{file} is not a readable safetensors file ({describe_error(error)}): "
                           f"a timm model's weights are the {WEIGHTS_FILE} of its Hugging Face repository") from error


def _model_shapes(spec: ArchSpec) -> dict[str, tuple[tuple[int, ...], bool]]:
    import torch

    with torch.device("meta"):  # shapes only: no memory, no initialisation
        model = spec.build()
    return {key: (tuple(value.shape), value.is_floating_point()) for key, value in model.state_dict().items()}


def _file_revision(repo: str, target: Path) -> None:
    """Point the repository's refs/main at the snapshot holding ``target``, and drop a cached "not there"."""
    folder = hub_repo_folder(repo)
    revision = target.parent.name
    ref = folder / "refs" / "main"
    if not ref.is_file() or ref.read_text(encoding="utf-8").strip() != revision:
        write_text_atomic(ref, revision)  # huggingface_hub reads the whole file as the revision: no newline
    (folder / ".no_exist" / revision / WEIGHTS_FILE).unlink(missing_ok=True)
