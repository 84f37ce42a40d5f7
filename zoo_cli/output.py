"""Rendering rows as a rich table, JSON, CSV or Markdown."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TextIO

from zoo.tables import cell, markdown_table
from zoo.text import escaped

FORMATS = ("table", "json", "csv", "markdown")
PIPED_WIDTH = 200
TEXT_COLUMNS = {"ilsvrc", "name", "family", "path", "class", "key", "value", "tag", "stage", "kind", "pretrained_tags",
                "setting", "weights"}


# What a terminal's lines keep of the controls zoo.text escapes: line breaks and tabs, and for a stream also \r,
# which progress bars rewrite their line with.
LINE_LAYOUT = "\t\n"
STREAM_LAYOUT = "\t\n\r"


# What tqdm and rich draw with on a terminal: colours and styles (SGR), cursor moves, erasing the line,
# hiding and showing the cursor.
DRAWING = re.compile(r"\x1b\[(?:[0-9;]*[ABCDGKm]|\?25[hl])")


def printable(text: str) -> str:
    """``text`` with every control character but line breaks and tabs written as its escape (``ESC`` → ``\\x1b``),
    so none reaches a terminal."""
    return escaped(text, keep=LINE_LAYOUT)


class EscapingStream:
    """A text stream that writes ``printable`` text (line breaks and tabs kept): a file, folder or class name in
    any line zoo or a library prints (a warning, a progress line) reaches the terminal as ``\\x1b``, never as ESC.

    On a terminal, the sequences progress bars and rich draw with (colours, cursor moves along a line, erasing
    it) pass; those that set the title, clear the screen or talk to the terminal (OSC, BEL) never do. ``raw``
    is the stream below, for rich, whose tables hold only ``printable`` cells.
    """

    def __init__(self, raw: TextIO) -> None:
        self.raw = raw
        try:
            self.terminal = raw.isatty()
        except (AttributeError, ValueError):  # a closed or unusual stream
            self.terminal = False

    def write(self, text: str) -> int:
        if not self.terminal:
            self.raw.write(escaped(text, keep=STREAM_LAYOUT))
            return len(text)
        kept = 0
        for match in DRAWING.finditer(text):
            self.raw.write(escaped(text[kept : match.start()], keep=STREAM_LAYOUT) + match.group())
            kept = match.end()
        self.raw.write(escaped(text[kept:], keep=STREAM_LAYOUT))
        return len(text)

    def __getattr__(self, name: str) -> Any:  # flush, fileno, isatty, encoding, buffer: the stream's own
        return getattr(self.raw, name)


@contextmanager
def escaped_output() -> Iterator[None]:
    """Within the block, ``sys.stdout`` and ``sys.stderr`` are ``EscapingStream``s."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = EscapingStream(sys.stdout), EscapingStream(sys.stderr)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


def _printable_values(row: dict[str, Any]) -> dict[str, Any]:
    return {key: printable(value) if isinstance(value, str) else value for key, value in row.items()}


def render(rows: Sequence[dict[str, Any]], columns: dict[str, str], fmt: str, title: str | None = None) -> None:
    """Print ``rows``; ``columns`` maps row keys to headers for table/markdown (JSON/CSV keep every key)."""
    if fmt == "json":
        # json escapes C0 controls itself; C1 controls (U+0080–U+009F) pass with ensure_ascii=False.
        print(printable(json.dumps(list(rows), indent=2, ensure_ascii=False)))
    elif fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else list(columns), lineterminator="\n")
        writer.writeheader()
        writer.writerows(_printable_values(row) for row in rows)
        sys.stdout.write(buffer.getvalue())
    elif fmt == "markdown":
        print(markdown_table(rows, columns))
    else:
        print_table(rows, columns, title)


def table_width() -> int:
    """The width tables are laid out for: the terminal's, or ``COLUMNS``; piped output keeps whole rows instead of
    folding them to an assumed 80-column terminal unless ``COLUMNS`` says how wide the reader is."""
    from rich.console import Console

    stdout = sys.stdout.raw if isinstance(sys.stdout, EscapingStream) else sys.stdout
    if stdout.isatty() or os.environ.get("COLUMNS", "").isdigit():
        return Console(file=stdout).width
    return PIPED_WIDTH


def print_table(rows: Sequence[dict[str, Any]], columns: dict[str, str], title: str | None = None,
                wrap: Sequence[str] = (), fold: Sequence[str] = (), whole: Sequence[str] = (),
                compact: bool = False) -> None:
    """``rows`` as a rich table that fits the terminal. The text cells of ``wrap``'s columns (lists of names) wrap
    at spaces and ``fold``'s (names that must be read whole) break anywhere instead of being cut; numbers are never
    cut. ``whole``'s text columns are as wide as their longest cell. ``compact``: no vertical rules, every number
    whole, headers and ``wrap``'s cells wrapped at their longest word, for tables of many short columns."""
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            raise BrokenPipeError  # rich would exit with status 1; zoo_cli.main ends every closed pipe alike

    stdout = sys.stdout.raw if isinstance(sys.stdout, EscapingStream) else sys.stdout  # rich's own escapes pass
    console = _Console(file=stdout, width=table_width())
    cells = {key: [cell(row.get(key)) for row in rows] for key in columns}

    def build(whole_numbers: bool) -> Table:
        table = Table(title=Text(printable(title)) if title else None,
                      box=box.SIMPLE_HEAD if compact else box.HEAVY_HEAD, pad_edge=not compact)
        for key, header in columns.items():
            if key in TEXT_COLUMNS:
                longest = max((len(text) for text in cells[key]), default=1)
                longest_word = max((len(word) for text in cells[key] for word in text.split()), default=1)
                table.add_column(header, justify="left", min_width=longest if key in whole else None,
                                 max_width=longest_word if compact and key in wrap else None)
            else:  # as wide as its longest figure, so rich narrows the text columns instead of cutting numbers
                longest = max((len(text) for text in cells[key]), default=1)
                # compact: the header wraps at its words rather than widening the column past its figures
                widest = max(longest, *(len(word) for word in header.split()))
                table.add_column(header, justify="right", min_width=longest if whole_numbers else None,
                                 max_width=widest if compact else None)
        for index in range(len(rows)):
            # Text, not markup: a class name like "[bold]" is shown as written. Other text cells stay on one line
            # and end in "…" when the table is too wide; their columns still count as wrappable, so rich narrows
            # them first instead of squeezing the numbers beside a 300-character class name to nothing.
            table.add_row(*(Text(cells[key][index], overflow="fold") if key in fold
                            else Text(cells[key][index], no_wrap=True, overflow="ellipsis")
                            if key in TEXT_COLUMNS and key not in wrap else Text(cells[key][index]) for key in columns))
        return table

    table = build(whole_numbers=compact)
    console.print(table)
