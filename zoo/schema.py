"""The files zoo writes and reads back (``zoo.json``, ``summary.json``) as strict pydantic records.

A file read back must hold exactly its record's keys, each of its type; whatever is wrong becomes one line naming
the file and the key, in zoo's "problem: fix" style (``check``). pydantic is imported by the modules that read such
files only, never by ``import zoo`` or the registry commands.
"""

from __future__ import annotations

import functools
import json
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

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


def check(record: type[RecordT], content: Any, origin: str, fix: str) -> RecordT:
    """``content`` (parsed JSON) as a ``record``, or a ``ZooError`` naming ``origin``, the key and ``fix``."""
    if not isinstance(content, dict):
        raise ZooError(f"{origin} holds a JSON {type(content).__name__}, not a mapping of keys: {fix}")
    content = record.upgrade(content)
    try:
        # Validated as JSON text: strict mode takes a JSON array for a tuple, a Python list it would refuse.
        return record.model_validate_json(json.dumps(content), strict=True)
    except ValidationError as error:
        raise ZooError(f"{problem(record, error, content, origin)}: {fix}") from error


def problem(record: type[Record], error: ValidationError, content: dict[str, Any], origin: str) -> str:
    """What is wrong with file ``origin``, in a line: the keys missing, else the keys unknown, else the first value
    that does not fit, with what it must be."""
    errors = error.errors()
    # A missing item of a tuple (its loc ends in an index) is a list too short: a wrong value, not a missing key.
    missing = [_key(item["loc"]) for item in errors if item["type"] in MISSING and isinstance(item["loc"][-1], str)]
    unknown = [_key(item["loc"]) for item in errors if item["type"] in UNKNOWN]
    if missing or unknown:
        what = f"lacks {', '.join(missing[:3])}" if missing else f"has unknown keys {', '.join(unknown[:3])}"
        return f"{origin} {what} (written by another version of zoo?)"
    first = errors[0]
    cause = (first.get("ctx") or {}).get("error")
    if isinstance(cause, FieldProblem):
        key, expected = cause.key, cause.expected
    else:
        key, schema = _field(record, first["loc"])
        if first["type"] == "value_error":  # a record's own check, in its own words
            return f"{origin}: {key}: {cause}"
        expected = describe(schema)
    value: Any = content
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return f"{origin}: {key} must be {expected}, got {short_repr(value)}"


def _key(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc)


def _field(record: type[Record], loc: tuple[int | str, ...]) -> tuple[str, dict[str, Any]]:
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
def json_schema(record: type[Record]) -> dict[str, Any]:
    """The JSON Schema of ``record``'s file (docs/schema holds them)."""
    return record.model_json_schema(mode="serialization")


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
    low, high = schema.get("minimum"), schema.get("maximum", schema.get("exclusiveMaximum"))
    if low is not None and high is not None:
        upto = "up to (not including) " if "exclusiveMaximum" in schema else ""
        return f"{text} from {low} {'to ' if not upto else ''}{upto}{high}"
    return text if low is None else f"{text} of at least {low}"


def _plural(text: str) -> str:
    return {"a number": "numbers", "a whole number": "whole numbers"}.get(text, text)
