"""User-facing errors: one line that names the problem and the fix."""

from __future__ import annotations

import difflib
import reprlib
from collections.abc import Iterable

from zoo.text import one_line


class ZooError(Exception):
    """A problem with the user's input; the CLI prints the message on one line and exits with status 2."""

    exit_code = 2

    def __str__(self) -> str:
        return one_line(super().__str__())


class UnknownModelError(ZooError, KeyError):
    """An architecture name that is neither registered nor a timm model."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        close = difflib.get_close_matches(name, list(known), n=5, cutoff=0.5)
        hint = f"closest: {', '.join(close)}" if close else "see `zoo list`"
        super().__init__(f"unknown architecture '{name}' ({hint}; timm models as timm/<name>)")

    def __str__(self) -> str:  # KeyError would quote the message
        return one_line(str(self.args[0]))


class WeightsError(ZooError):
    """Pretrained weights that cannot be found, fetched or loaded."""


DETAIL_LENGTH = 200  # characters of an exception's own message kept in a one-line error
# What torch's weights_only refusal wraps around the unpickler's one line: its title and paragraphs of advice.
TORCH_ADVICE = ("Weights only load failed", "(1)", "(2)", "Please file an issue", "Check the documentation")


def shorten(text: str, length: int = DETAIL_LENGTH) -> str:
    """``text`` cut to ``length`` characters, an ellipsis marking the cut."""
    return text if len(text) <= length else text[: length - 1] + "…"


_SHORT_REPR = reprlib.Repr()  # its limits as attributes: Python 3.10 and 3.11 take no arguments
_SHORT_REPR.maxstring, _SHORT_REPR.maxother, _SHORT_REPR.maxlist, _SHORT_REPR.maxdict = 60, 60, 4, 4


def short_repr(value: object) -> str:
    """``value``'s repr in at most a line, lists with their length: a damaged file's value may be huge."""
    shown = shorten(_SHORT_REPR.repr(value), 80)
    return f"a list of {len(value)}: {shown}" if isinstance(value, list) else shown


def first_line(error: BaseException) -> str:
    """The first non-empty line of ``error``'s message, stripped; its type's name when it has none."""
    return next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)


def describe_error(error: BaseException) -> str:
    """The type and the telling line of an exception's message, for a one-line user error.

    A file that ``torch.load(weights_only=True)`` refuses is described by the unpickler's line (what the file
    needs) and by why it is refused, in zoo's words: torch's own reason sits in paragraphs cut from one line.
    """
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    name = type(error).__name__
    if not lines:
        return name
    if lines[0].startswith(TORCH_ADVICE[0]):
        needs = [line for line in lines if not line.startswith(TORCH_ADVICE)]
        # The unpickler's line goes on with how to allowlist the object, which zoo never does.
        detail = needs[-1].split(". ")[0].rstrip(".") if needs else "it holds more than plain tensors"
        return (f"{name}: {shorten(detail)}; torch.load refuses it with weights_only=True because unpickling "
                "Python objects can run arbitrary code")
    return f"{name}: {shorten(lines[0])}"
