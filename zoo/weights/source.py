"""What every weight source offers (``WeightSource``), and the file records they share: a file an entry needs
(``WeightFile``) and a verified file about to be installed (``InstallPlan``)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from zoo.errors import WeightsError

if TYPE_CHECKING:  # torch is imported where tensors are read: zoo list, info and weights run without it
    from torch import Tensor, nn

    from zoo.spec import ArchSpec, WeightsInfo

ALL_TAGS = "all"
CHUNK = 1 << 20
HASH_PATTERN = re.compile(r"-([a-f0-9]*)\.")  # torch.hub.HASH_REGEX, without importing torch


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
class InstallPlan:
    """A verified file, where it goes, and what its source does once it is there (``after``)."""

    source: Path
    arch: str
    tag: str
    target: Path
    sha256: str
    after: Callable[[], None] | None = field(default=None, compare=False)


class WeightSource(Protocol):
    """Where an entry's pretrained weights come from, how they load, and how a carried-in file is installed."""

    def available(self) -> tuple[WeightsInfo, ...]: ...

    @property
    def default_tag(self) -> str: ...

    def state_dict(self, tag: str) -> dict[str, Tensor]: ...

    def adapt(self, state_dict: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
        """``state_dict`` made to fit ``model``, the entry's network in its published form (timm's ``filter_fn``)."""
        ...

    def weight_file(self, spec: ArchSpec, info: WeightsInfo, default: bool) -> WeightFile:
        """The file behind ``info``: where it goes, whether it is there, and how to get it offline."""
        ...

    def file_named(self, name: str) -> WeightsInfo | None:
        """The weights published under the file name ``name``, for a file added without ``--arch``."""
        ...

    def plan_install(self, file: Path, spec: ArchSpec, tag: str | None) -> InstallPlan:
        """``file`` verified as ``spec``'s weights ``tag`` (``None``: by its name, else the default), or refused."""
        ...

    def stored_metadata(self) -> dict[str, Any] | None:
        """What ``zoo/metadata.json`` keeps of these weights so that ``zoo weights`` runs without importing them."""
        ...


def pick(infos: tuple[WeightsInfo, ...], tag: str, arch: str) -> WeightsInfo:
    """The weights tagged ``tag`` among ``infos``, or a one-line error listing the tags there are."""
    for info in infos:
        if info.tag == tag:
            return info
    tags = ", ".join(info.tag for info in infos) or "none"
    raise WeightsError(f"{arch} has no weights tagged '{tag}' (available: {tags}; or a file path, or none)")


def select_tags(spec: ArchSpec, tag: str | None) -> list[WeightsInfo]:
    """``spec``'s default weights (``tag`` None or ``default``), those tagged ``tag``, or every tag (``all``)."""
    assert spec.weights is not None
    infos = spec.weights.available()
    if tag == ALL_TAGS:
        return list(infos)
    wanted = spec.weights.default_tag if tag in (None, "default") else tag
    chosen = [info for info in infos if info.tag == wanted]
    if not chosen:  # zoo weights: a tag, or all of them
        tags = ", ".join(info.tag for info in infos) or "none"
        raise WeightsError(f"{spec.name} has no weights tagged '{wanted}' (available: {tags}, or all)")
    return chosen


def sha256(file: Path) -> str:
    """The SHA-256 of ``file``'s bytes, read in chunks."""
    digest = hashlib.sha256()
    try:
        with file.open("rb") as stream:
            while chunk := stream.read(CHUNK):
                digest.update(chunk)
    except OSError as error:
        raise unreadable(file, error) from error
    return digest.hexdigest()


def unreadable(file: Path, error: OSError) -> WeightsError:
    return WeightsError(f"cannot read {file}: {error.strerror or type(error).__name__}; check that it is readable")


def size_mib(path: Path) -> float:
    return round(path.stat().st_size / 2**20, 3)


def hash_prefix(file_name: str) -> str | None:
    """The SHA-256 prefix a torchvision / torch.hub file name carries (``resnet18-f37072fd.pth``: ``f37072fd``),
    read with torch.hub's own pattern; ``None`` when it has none."""
    match = HASH_PATTERN.search(file_name)
    return match.group(1) if match and match.group(1) else None
