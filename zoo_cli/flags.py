"""Flags made from fields declared with ``finetune.config.option``: a run's config fields and each command's settings
dataclass, so a flag's name, type, choices, default and help are written once, on its field."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from finetune.config import alternatives

if TYPE_CHECKING:
    from _typeshed import DataclassInstance


def flag_of(item: dataclasses.Field[Any]) -> str | None:
    """A field's flag: ``--field-name`` unless its metadata names another, or None (no flag)."""
    return item.metadata.get("flag", "--" + item.name.replace("_", "-"))


def _number_or(flag: str, words: tuple[str, ...], kind: type[int] | type[float]) -> Callable[[str], float | str]:
    def convert(text: str) -> float | str:
        if text in words:
            return text
        try:
            return kind(text)
        except ValueError:
            number = "a whole number" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"{flag} takes {number} or {' or '.join(words)}, got '{text}'") from None

    return convert


def _reading(flag: str, annotation: Any) -> dict[str, Any]:
    """How argparse reads a flag of type ``annotation``: a ``Literal`` names its choices."""
    kinds = [kind for kind in alternatives(annotation) if kind is not type(None)]
    words = tuple(word for kind in kinds if typing.get_origin(kind) is Literal for word in typing.get_args(kind))
    kinds = [kind for kind in kinds if typing.get_origin(kind) is not Literal]
    if kinds == [bool]:
        return {"action": "store_true"}
    if not kinds:
        return {"choices": words}
    if words:  # optim.lr: a number or auto
        return {"type": _number_or(flag, words, kinds[0])}
    return {"type": kinds[0]}


def add_flag(parser: argparse._ActionsContainer, item: dataclasses.Field[Any], annotation: Any,
             help: str | None = None, **keywords: Any) -> None:
    """The flag of field ``item``, read as its type says, with the field's help (``help`` rewords it); its metadata
    and then ``keywords`` override what argparse is given."""
    flag = flag_of(item)
    assert flag, f"{item.name} has no flag"
    # argparse formats help with %: a field's help is plain text (e.g. "1%")
    text = (help or item.metadata["help"]).replace("%", "%%") or None
    given = {key: item.metadata[key] for key in ("metavar", "choices", "type", "required") if key in item.metadata}
    parser.add_argument(flag, **{**_reading(flag, annotation), "help": text, **given, **keywords})


def add_settings_flags(parser: argparse._ActionsContainer, settings: type[DataclassInstance]) -> None:
    """A flag for each ``option`` field of the dataclass ``settings``, in order: its default and destination are the
    field's, so ``args.NAME`` holds the value to pass on."""
    hints = typing.get_type_hints(settings)
    for item in dataclasses.fields(settings):
        if "help" in item.metadata and flag_of(item):
            add_flag(parser, item, hints[item.name], default=item.default, dest=item.name)
