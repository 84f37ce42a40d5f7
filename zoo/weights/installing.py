"""Weight files on a machine without internet: which files an entry needs, and installing files carried in.

Each weight source keeps its files in its own place and says how one is verified (``WeightSource.plan_install``);
``add_files`` puts a file exactly where that source's loader looks, after every file given is verified, so a
refused file leaves the caches as they were.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from zoo._io import write_atomic
from zoo.errors import WeightsError, ZooError
from zoo.registry import get_spec, list_models
from zoo.spec import ArchSpec, WeightsInfo
from zoo.weights.source import ALL_TAGS, CHUNK, InstallPlan, WeightFile, select_tags, sha256, unreadable


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
    except WeightsError:  # timm's default is not on the hub: --tag all or a tag still lists; select_tags refuses
        default = None
    return [spec.weights.weight_file(spec, info, info.tag == default) for info in select_tags(spec, tag)]


def add_files(files: Sequence[Path], arch: str | None = None, tag: str | None = None) -> list[Installed]:
    """Verify every file, then install each where its source's loader reads it; any refusal installs nothing.

    Without ``arch`` a file is known by its published name; ``arch`` (and ``tag``) name the weights a file is
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
    plans: list[InstallPlan] = []
    refused: list[str] = []
    for file in files:
        try:
            plans.append(_verify(Path(file).expanduser(), spec, tag))
        except ZooError as error:
            refused.append(str(error))
    targets: dict[Path, InstallPlan] = {}
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


def _verify(file: Path, spec: ArchSpec | None, tag: str | None) -> InstallPlan:
    if not file.is_file():
        raise WeightsError(f"{file} does not exist or is not a file: check the path")
    try:
        file.open("rb").close()
    except OSError as error:
        raise unreadable(file, error) from error
    if spec is None:
        spec, info = _known_by_name(file)
        tag = info.tag
    if spec.weights is None:
        raise _no_weights(spec)
    return spec.weights.plan_install(file, spec, tag)


def _known_by_name(file: Path) -> tuple[ArchSpec, WeightsInfo]:
    """The registry entry and weights published under ``file``'s name."""
    for name in list_models():
        spec = get_spec(name)
        info = spec.weights.file_named(file.name) if spec.weights is not None else None
        if info is not None:
            return spec, info
    hint = (f"a timm / Hugging Face file needs its model named: zoo weights add {file.name} --arch timm/NAME[.TAG]"
            if file.suffix == ".safetensors" else
            "torchvision files keep the name they are published under, which zoo weights ARCH lists "
            "(e.g. resnet18-f37072fd.pth): rename it, or name its weights with --arch ARCH [--tag TAG]")
    raise WeightsError(f"{file} matches no known weights: {hint}")


def _install(plan: InstallPlan) -> Installed:
    existed = plan.target.is_file()
    if existed and sha256(plan.target) == plan.sha256:
        status = "already installed"
    else:
        write_atomic(plan.target, lambda temporary: _copy_verified(plan, temporary))
        status = "replaced" if existed else "installed"
    if plan.after is not None:
        plan.after()
    return Installed(plan.source, plan.arch, plan.tag, plan.target, plan.sha256, status)


def _copy_verified(plan: InstallPlan, temporary: Path) -> None:
    """Copy the file and hash what was copied: a file changed since it was verified is not installed."""
    digest = hashlib.sha256()
    try:
        reader = plan.source.open("rb")
    except OSError as error:  # write_atomic would report it as a failed write
        raise unreadable(plan.source, error) from error
    with reader, temporary.open("wb") as writer:
        while chunk := reader.read(CHUNK):
            writer.write(chunk)
            digest.update(chunk)
    if digest.hexdigest() != plan.sha256:
        raise WeightsError(f"{plan.source} changed while it was being installed: nothing of it was installed; "
                           "run zoo weights add again")
