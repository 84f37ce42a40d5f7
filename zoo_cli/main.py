"""Entry point of the ``zoo`` command: parse, dispatch, turn user errors into one line and exit 2."""

from __future__ import annotations

import argparse
import atexit
import os
import sys
from collections.abc import Sequence

from zoo_cli import (
    compare_command,
    data_command,
    explain_commands,
    finetune_command,
    model_commands,
    registry_commands,
    serve_command,
    weights_command,
)

# 128 + SIGPIPE: the status a shell reports for cat or grep, which SIGPIPE kills when their reader leaves, so
# scripts (set -o pipefail) treat zoo's early exit exactly like theirs. (Python's own recipe, and rich, exit 1,
# which zoo predict and zoo compare already use for "some inputs failed".)
SIGPIPE_STATUS = 141
INTERRUPTED_STATUS = 130  # 128 + SIGINT


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zoo",
        description="A model zoo and transfer-learning toolkit: compare the ImageNet-winning CNNs and "
        "fine-tune them on your own images.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    registry_commands.add_parsers(commands)
    weights_command.add_parsers(commands)
    finetune_command.add_parsers(commands)
    model_commands.add_parsers(commands)
    compare_command.add_parsers(commands)
    data_command.add_parsers(commands)
    explain_commands.add_parsers(commands)
    serve_command.add_parsers(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(data_command.with_default_action(parser, sys.argv[1:] if argv is None else argv))
    from zoo.errors import ZooError
    from zoo_cli.output import escaped_output, printable

    try:
        with escaped_output():
            status = args.run(args)
        sys.stdout.flush()  # inside the try: a reader that left shows here, not at interpreter exit
        return status
    except ZooError as error:
        print(f"zoo {args.command}: error: {printable(str(error))}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        # Ctrl-C: one line, no traceback, the status a shell gives a command killed by SIGINT. A training run
        # saves last.ckpt and prints its resume command first (finetune/training/saving.py).
        print(f"\nzoo {args.command}: interrupted", file=sys.stderr)
        return INTERRUPTED_STATUS
    except BrokenPipeError:
        # The reader closed the pipe (zoo list | head -1): stop quietly, as cat or grep do. Python would print
        # a traceback, and another error when it flushes stdout at exit: stdout now goes to /dev/null instead.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return SIGPIPE_STATUS


def run() -> None:
    """The ``zoo`` command: ``main``, then an exit that skips tearing down every module.

    Python's teardown of torch and Lightning took 2-5 s after the last line was printed (measured here on a
    loaded machine): time a user waits for nothing. The exit handlers still run (temporary folders, worker
    processes, loggers) and the output is flushed first.
    """
    status = main()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):  # the reader left, or the stream is closed: nothing to deliver
            pass
    os._exit(status)


if __name__ == "__main__":
    run()
