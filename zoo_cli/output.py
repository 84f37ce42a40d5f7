"""Rendering rows as a rich table, JSON, CSV or Markdown."""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Sequence
from typing import Any

FORMATS = ("table", "json", "csv", "markdown")
TEXT_COLUMNS = {"name", "family", "path", "class", "key", "value", "tag", "stage", "kind", "pretrained_tags", "setting",
                "weights"}


def render(rows: Sequence[dict[str, Any]], columns: dict[str, str], fmt: str, title: str | None = None) -> None:
    """Print ``rows``; ``columns`` maps row keys to headers for table/markdown (JSON/CSV keep every key)."""
    if fmt == "json":
        print(json.dumps(list(rows), indent=2, ensure_ascii=False))
    elif fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else list(columns), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        sys.stdout.write(buffer.getvalue())
    elif fmt == "markdown":
        print(markdown_table(rows, columns))
    else:
        print_table(rows, columns, title)


def cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def markdown_table(rows: Sequence[dict[str, Any]], columns: dict[str, str]) -> str:
    lines = ["| " + " | ".join(columns.values()) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(key)) for key in columns) + " |" for row in rows]
    return "\n".join(lines)


def print_table(rows: Sequence[dict[str, Any]], columns: dict[str, str], title: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for key, header in columns.items():
        table.add_column(header, justify="left" if key in TEXT_COLUMNS else "right", no_wrap=key in TEXT_COLUMNS)
    for row in rows:
        table.add_row(*(cell(row.get(key)) for key in columns))
    # Piped output keeps whole rows instead of folding them to an assumed 80-column terminal.
    Console(width=None if sys.stdout.isatty() else 200).print(table)
