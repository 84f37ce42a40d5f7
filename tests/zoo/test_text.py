"""One escaping rule for text from outside zoo: error messages stay one line, terminal output keeps its layout,
and neither lets a control character (ESC above all) reach the terminal."""

from __future__ import annotations

import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from zoo.errors import ZooError
from zoo.text import escaped, one_line
from zoo_cli.output import printable

# The Unicode separators break a line as \n does, though they are not controls (category Cc).
SEPARATORS = "\u2028\u2029"
# Text rich in what the rule is about: controls, separators, backslashes, and ordinary letters.
TEXTS = st.text(st.one_of(st.characters(), st.sampled_from("\x1b\n\r\t\x85\x9b\x7f\\" + SEPARATORS)))


def _controls(text: str) -> set[str]:
    return {c for c in text if unicodedata.category(c) == "Cc" or c in SEPARATORS}


@given(TEXTS)
def test_one_line_leaves_no_control_character_and_no_line_break(text: str) -> None:
    line = one_line(text)
    assert not _controls(line)
    assert len(line.splitlines()) <= 1
    assert one_line(line) == line, "escaping twice changes nothing: the escapes are printable ASCII"


@given(TEXTS)
def test_printable_keeps_only_line_breaks_and_tabs(text: str) -> None:
    assert _controls(printable(text)) <= {"\n", "\t"}


@given(TEXTS)
def test_text_without_controls_is_unchanged(text: str) -> None:
    plain = "".join(c for c in text if not _controls(c))
    assert escaped(plain) == plain
    assert printable(plain) == plain


def test_escapes_are_pythons() -> None:
    assert one_line("a\nb\x1b[31m\u2028\x9b\tc") == "a\\nb\\x1b[31m\\u2028\\x9b\\tc"
    assert printable("a\nb\x1b[31m\r\tc") == "a\nb\\x1b[31m\\r\tc"
    assert escaped("\r\n\x1b", keep="\r\n") == "\r\n\\x1b"


def test_an_error_from_a_class_name_with_a_line_break_is_one_line() -> None:
    assert str(ZooError("class 'cat\n\x1b]0;pwned\x07' is empty")) == "class 'cat\\n\\x1b]0;pwned\\x07' is empty"
