"""Text from outside zoo (file, folder and class names, messages) made safe to print: one escaping rule."""

from __future__ import annotations

import re

# Escaped: the C0 controls (ESC, tab and the line breaks among them), DEL and the C1 controls, which a terminal
# obeys, and the Unicode line and paragraph separators, which break a line as \n does.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def escaped(text: str, keep: str = "") -> str:
    """``text`` with every control character not in ``keep`` written as its Python escape (ESC as ``\\x1b``, a
    newline as ``\\n``), in printable ASCII."""
    def escape(match: re.Match[str]) -> str:
        character = match.group()
        return character if character in keep else character.encode("unicode_escape").decode("ascii")

    return _CONTROL.sub(escape, text)


def one_line(text: str) -> str:
    """``text`` as one line, safe to print: every control character escaped, line breaks and tabs included."""
    return escaped(text)
