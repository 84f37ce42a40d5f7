"""The registry: one string namespace for the classic entries and every timm model (``timm/<name>``)."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable

from zoo.catalog import CLASSIC
from zoo.errors import UnknownModelError
from zoo.spec import ArchSpec

TIMM_PREFIX = "timm/"


class Registry:
    """Architecture entries by name; registering a name twice is an error."""

    def __init__(self, specs: Iterable[ArchSpec] = ()) -> None:
        self._specs: dict[str, ArchSpec] = {}
        for spec in specs:
            self.register(spec)

    def register(self, spec: ArchSpec) -> None:
        if spec.name in self._specs:
            raise ValueError(f"architecture '{spec.name}' is already registered")
        if spec.name.startswith(TIMM_PREFIX):
            raise ValueError(f"'{TIMM_PREFIX}' names are reserved for the timm bridge: rename '{spec.name}'")
        self._specs[spec.name] = spec

    def names(self, pattern: str | None = None) -> list[str]:
        names = list(self._specs)
        return [n for n in names if fnmatch.fnmatchcase(n, pattern)] if pattern else names

    def get(self, name: str) -> ArchSpec:
        if name.startswith(TIMM_PREFIX):
            from zoo.timm_bridge import timm_spec

            return timm_spec(name.removeprefix(TIMM_PREFIX))
        try:
            return self._specs[name]
        except KeyError:
            raise UnknownModelError(name, self._specs) from None


REGISTRY = Registry(CLASSIC)


def list_models(pattern: str | None = None) -> list[str]:
    """Names of the registered entries, optionally filtered by a shell-style pattern (``'resnet*'``)."""
    return REGISTRY.names(pattern)


def get_spec(name: str) -> ArchSpec:
    """The entry called ``name`` (``timm/<name>`` for any timm model)."""
    return REGISTRY.get(name)
