"""Rows of figures as text: one cell each, and Markdown tables (printed by the CLI, written into reports)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from zoo.text import one_line


def cell(value: Any) -> str:
    """A value as a table shows it: – for missing, yes/no, two decimals, text on one line with controls escaped."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.2f}"
    return one_line(str(value))


def markdown_table(rows: Sequence[dict[str, Any]], columns: dict[str, str]) -> str:
    """``rows`` as a Markdown table; ``columns`` maps row keys to headers, in order."""
    lines = ["| " + " | ".join(columns.values()) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(key)).replace("|", "\\|") for key in columns) + " |" for row in rows]
    return "\n".join(lines)


def listed(names: Sequence[str], shown: int = 5) -> str:
    """The first ``shown`` of ``names`` for a one-line message, with an ellipsis for the rest."""
    return ", ".join(names[:shown]) + (", …" if len(names) > shown else "")
