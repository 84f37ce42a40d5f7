"""The files zoo writes and reads back (``zoo.json``, ``summary.json``, a run's ``config.yaml``) as strict records.

A file read back must hold exactly its record's keys, each of its type; whatever is wrong becomes one line naming
the file and the key, in zoo's "problem: fix" style (``check``, ``validate``). A record is a pydantic model
(``Record``) or a plain dataclass whose fields carry ``annotated_types`` bounds (the run config, whose module the
command line imports without pydantic). pydantic is imported by the modules that read such files only, never by
``import zoo`` or the registry commands.
"""

from __future__ import annotations

import difflib
import functools
import json
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from zoo.errors import ZooError, short_repr

# pydantic's error types for a key a file lacks and for one it should not have (the second of each: a dataclass's).
MISSING = ("missing", "missing_argument")
UNKNOWN = ("extra_forbidden", "unexpected_keyword_argument")


class Record(BaseModel):
    """A file's content: frozen, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def upgrade(cls, content: dict[str, Any]) -> dict[str, Any]:
        """``content`` as this version writes it: a record whose layout changed converts older files here."""
        return content

    def to_dict(self) -> dict[str, Any]:
        """The content of the file, as JSON values."""
        return self.model_dump(mode="json")


class FieldProblem(ValueError):
    """A value that has the right type but cannot be used, raised by a record's own checks: ``key`` must be
    ``expected``."""

    def __init__(self, key: str, expected: str) -> None:
        super().__init__(f"{key} must be {expected}")
        self.key, self.expected = key, expected


RecordT = TypeVar("RecordT", bound=Record)
T = TypeVar("T")
ANOTHER_VERSION = "written by another version of zoo?"


def check(record: type[RecordT], content: Any, origin: str, fix: str) -> RecordT:
    """``content`` (parsed JSON) as a ``record``, or a ``ZooError`` naming ``origin``, the key and ``fix``."""
    if not isinstance(content, dict):
        raise ZooError(f"{origin} holds a JSON {type(content).__name__}, not a mapping of keys: {fix}")
    return validate(record, record.upgrade(content), origin, fix)


def validate(kind: type[T], content: dict[str, Any], origin: str, fix: str = "", *,
             unknown_hint: str | None = ANOTHER_VERSION, error: type[ZooError] = ZooError) -> T:
    """``content`` as a ``kind`` (a ``Record`` or a dataclass), or an ``error`` naming ``origin``, the key and
    ``fix``. An unknown key names the known key close to it, else ``unknown_hint``, else (None) the keys known."""
    try:
        # Validated as JSON text: strict mode takes a JSON array for a tuple, a Python list it would refuse. A value
        # JSON lacks (a YAML date) is its text, refused by any field but a text one.
        return _adapter(kind).validate_json(json.dumps(content, default=str), strict=True)
    except ValidationError as problems:
        line = problem(kind, problems, content, origin, unknown_hint=unknown_hint)
        raise error(f"{line}: {fix}" if fix else line) from None


_ADAPTERS: dict[type, TypeAdapter[Any]] = {}  # building one costs milliseconds; a config is checked often


def _adapter(kind: type[T]) -> TypeAdapter[T]:
    if kind not in _ADAPTERS:
        _ADAPTERS[kind] = TypeAdapter(kind)
    return _ADAPTERS[kind]


def problem(record: type, error: ValidationError, content: dict[str, Any], origin: str, *,
            unknown_hint: str | None = ANOTHER_VERSION) -> str:
    """What is wrong with file ``origin`` (or, with none, with the values given), in a line: the keys missing, else
    the keys unknown (see ``validate``), else the first value that does not fit, with what it must be."""
    errors = error.errors()
    # A missing item of a tuple (its loc ends in an index) is a list too short: a wrong value, not a missing key.
    missing = [_key(item["loc"]) for item in errors if item["type"] in MISSING and isinstance(item["loc"][-1], str)]
    if missing:
        return f"{origin} lacks {', '.join(missing[:3])} ({ANOTHER_VERSION})"
    unknown = [item["loc"] for item in errors if item["type"] in UNKNOWN]
    if unknown:
        keys = ", ".join(_key(loc) for loc in unknown[:3])
        what = f"{origin} has unknown key" if origin else "unknown key"
        return f"{what}{'s' * (len(unknown) > 1)} {keys} ({_unknown_hint(record, unknown[0], unknown_hint)})"
    first = errors[0]
    cause = (first.get("ctx") or {}).get("error")
    if isinstance(cause, FieldProblem):
        key, expected = cause.key, cause.expected
    else:
        key, schema = _field(record, first["loc"])
        if first["type"] == "value_error":  # a record's own check, in its own words (naming its keys)
            return f"{origin}: {cause}" if origin else str(cause)
        expected = describe(schema)
    value: Any = content
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    wrong = f"{key} must be {expected}, got {short_repr(value)}"
    return f"{origin}: {wrong}" if origin else wrong


def _key(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc)


def _unknown_hint(record: type, loc: tuple[int | str, ...], hint: str | None) -> str:
    """``did you mean a.b?`` for the known key nearest to unknown ``loc``; else ``hint``; else the known keys."""
    _, parent = _field(record, loc[:-1])  # the mapping that holds the key
    names = list(parent.get("properties", {}))
    close = difflib.get_close_matches(str(loc[-1]), names, n=1)
    if close or hint is None:
        keys = [_key((*loc[:-1], name)) for name in close or names]
        return f"did you mean {keys[0]}?" if close else f"known: {', '.join(keys)}"
    return hint


def _field(record: type, loc: tuple[int | str, ...]) -> tuple[str, dict[str, Any]]:
    """The dotted key of the record's field that ``loc`` lies in, and that field's JSON schema."""
    full = json_schema(record)
    schema: dict[str, Any] = full
    names: list[str] = []
    for part in loc:
        properties = _resolve(full, schema).get("properties", {})
        if part not in properties:  # a list index, a mapping's own key or a union member: inside the field
            break
        names.append(str(part))
        schema = properties[part]
    return ".".join(names), _resolve(full, schema)


@functools.cache
def json_schema(record: type) -> dict[str, Any]:
    """The JSON Schema of ``record``'s file (docs/schema holds them)."""
    return _adapter(record).json_schema(mode="serialization")


def _resolve(full: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        return dict(full["$defs"][schema["$ref"].rsplit("/", 1)[-1]])
    return schema


def describe(schema: dict[str, Any]) -> str:
    """What a value of JSON ``schema`` is, in words: ``a whole number from 1 to 4096``, ``a list of text``."""
    if "anyOf" in schema:
        return " or ".join(describe(option) for option in schema["anyOf"])
    if "enum" in schema or "const" in schema:
        options = [str(option) for option in schema.get("enum", [schema.get("const")])]
        return " or ".join(options) if len(options) <= 2 else f"one of {', '.join(options)}"
    kind = schema.get("type")
    if kind == "array":
        items = schema.get("prefixItems", [schema.get("items", {})])
        count = f"{len(items)} " if "prefixItems" in schema else ""
        return f"a list of {count}{_plural(describe(items[0]) if items[0] else 'values')}"
    if kind == "object":
        values = schema.get("additionalProperties")
        return f"a mapping to {describe(values)}" if isinstance(values, dict) and values else "a mapping"
    names = {"null": "null", "number": "a number", "integer": "a whole number", "string": "text",
             "boolean": "true or false"}
    text = names.get(str(kind), "a value")
    return f"{text} {_bounds(schema)}".rstrip()


def _bounds(schema: dict[str, Any]) -> str:
    """A number's bounds in words: ``from 0 to 1``, ``above 0 and below 1``, ``of at least 1``."""
    low, high = schema.get("minimum"), schema.get("maximum")
    above, below = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    if low is not None and high is not None:
        return f"from {low} to {high}"
    lower = f"of at least {low}" if low is not None else f"above {above}" if above is not None else ""
    upper = f"at most {high}" if high is not None else f"below {below}" if below is not None else ""
    return " and ".join(part for part in (lower, upper) if part)


def _plural(text: str) -> str:
    return {"a number": "numbers", "a whole number": "whole numbers"}.get(text, text)
