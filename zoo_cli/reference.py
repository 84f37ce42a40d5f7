"""The option tables of ``docs/options.md``, generated from the parsers (themselves made from the config's fields), so
the documentation and ``--help`` have one source. ``python -m zoo_cli.reference`` rewrites them; a test keeps them in
step."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from finetune.config import config_fields
from finetune.shipping.settings import byte_count, byte_text
from zoo_cli.flags import flag_of

OPTIONS_FILE = Path(__file__).parents[1] / "docs" / "options.md"
BLOCK = re.compile(r"(<!-- options: zoo (?P<command>[\w-]+) -->\n)(.*?)(<!-- /options -->)", re.DOTALL)


def _parsers() -> dict[str, argparse.ArgumentParser]:
    from zoo_cli.main import build_parser

    commands = next(action for action in build_parser()._actions if isinstance(action, argparse._SubParsersAction))
    parsers = dict(commands.choices)
    data = parsers["data"]
    actions = next(action for action in data._actions if isinstance(action, argparse._SubParsersAction))
    parsers["data"] = actions.choices["summary"]
    return parsers


def _config_defaults() -> dict[tuple[str, str], object]:
    """The default of each config field's flag, keyed by (flag, help): another command's flag of the same name
    (zoo evaluate's --data) is not the field's."""
    return {(flag, item.metadata["help"]): item.default for _, item, _ in config_fields() if (flag := flag_of(item))}


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def option_table(command: str) -> str:
    """The Markdown table of ``zoo COMMAND``'s arguments: flag and value, default, meaning. zoo compare lists only its
    own: its training options are zoo finetune's."""
    parser, defaults = _parsers()[command], _config_defaults()
    lines = ["| option | default | meaning |", "|---|---|---|"]
    for action in parser._actions:
        meaning = (action.help or "").replace("%%", "%")  # argparse's escape of a plain %
        # zoo compare's own flags beside --data; its training flags are zoo finetune's table
        training = bool(action.option_strings) and action.dest != "data" and (
            action.option_strings[0], meaning) in defaults
        if isinstance(action, argparse._HelpAction) or (command == "compare" and (training or action.dest == "config")):
            continue
        name = ", ".join(f"`{flag}`" for flag in action.option_strings) or f"`{action.metavar or action.dest}`"
        if action.option_strings and action.nargs != 0:
            value = action.metavar or ("|".join(map(str, action.choices)) if action.choices else action.dest.upper())
            name = name[:-1] + f" {value}`"
        flag = action.option_strings[0] if action.option_strings else None
        default = defaults.get((flag, meaning), action.default) if flag else None
        if action.type is byte_count and isinstance(default, int):
            default = byte_text(default)
        shown = "" if default is None or default is False or default == argparse.SUPPRESS else f"`{default}`"
        lines.append(f"| {_cell(name)} | {_cell(shown)} | {_cell(meaning)} |")
    return "\n".join(lines) + "\n"


def rendered(text: str) -> str:
    """``text`` with every ``<!-- options: zoo COMMAND -->`` block replaced by the current table."""
    return BLOCK.sub(lambda match: match.group(1) + option_table(match.group("command")) + match.group(4), text)


def main() -> int:
    text = OPTIONS_FILE.read_text(encoding="utf-8")
    OPTIONS_FILE.write_text(rendered(text), encoding="utf-8")
    print(f"wrote the option tables of {OPTIONS_FILE}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
