"""Entry point of the ``zoo`` command: parse, dispatch, turn user errors into one line and exit 2."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from zoo_cli import compare_command, finetune_command, model_commands, registry_commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zoo",
        description="A model zoo and transfer-learning toolkit: compare the ImageNet-winning CNNs and "
        "fine-tune them on your own images.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    registry_commands.add_parsers(commands)
    finetune_command.add_parsers(commands)
    model_commands.add_parsers(commands)
    compare_command.add_parsers(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from zoo.errors import ZooError
    from zoo_cli.output import printable

    try:
        return args.run(args)
    except ZooError as error:
        print(f"zoo {args.command}: error: {printable(str(error))}", file=sys.stderr)
        return error.exit_code


if __name__ == "__main__":
    sys.exit(main())
