"""User-facing errors: one line that names the problem and the fix."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ZooError(Exception):
    """A problem with the user's input; the CLI prints the message on one line and exits with status 2."""

    exit_code = 2


class UnknownModelError(ZooError, KeyError):
    """An architecture name that is neither registered nor a timm model."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        close = difflib.get_close_matches(name, list(known), n=5, cutoff=0.5)
        hint = f"closest: {', '.join(close)}" if close else "see `zoo list`"
        super().__init__(f"unknown architecture '{name}' ({hint}; timm models as timm/<name>)")

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class WeightsError(ZooError):
    """Pretrained weights that cannot be found, fetched or loaded."""
