"""``zoo serve``: a trained model behind an HTTP API, with a page to try it in a browser."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from zoo.tta import TTA_MODES
from zoo_cli.model_commands import SOURCE_HELP, TTA_HELP

UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "ki": 2**10, "mi": 2**20, "gi": 2**30}
SIZE = re.compile(r"(\d+)\s*(k|m|g|ki|mi|gi)?b?", re.IGNORECASE)


def byte_count(text: str) -> int:
    """``20MB`` (10**6), ``512KiB`` (2**10) or plain bytes, as a number of bytes."""
    match = SIZE.fullmatch(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"'{text}' is not a size: give bytes, or a number with KB, MB, GB, KiB, MiB "
                                         "or GiB")
    return int(match[1]) * UNITS[(match[2] or "").lower()]


def add_parsers(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser("serve",
                                help="serve a trained model over HTTP: POST /predict, GET /metadata, a page at /")
    serve.add_argument("source", type=Path, metavar="SOURCE", help=SOURCE_HELP)
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 for every network)")
    serve.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0: any free port, printed)")
    serve.add_argument("--workers", type=int, default=1,
                       help="server processes, each with its own copy of the model (default: 1)")
    serve.add_argument("--max-batch-size", type=int, default=32,
                       help="most images run together when requests arrive faster than the model answers (default: 32)")
    serve.add_argument("--max-bytes", type=byte_count, default="20MB",
                       help="largest upload accepted, e.g. 20MB or 512KiB (default: 20MB)")
    serve.add_argument("--tta", choices=TTA_MODES, help=TTA_HELP)
    serve.set_defaults(run=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    from finetune.shipping.serve.app import ServeSettings
    from finetune.shipping.serve.server import serve

    settings = ServeSettings(str(args.source), max_batch_size=args.max_batch_size, max_bytes=args.max_bytes,
                             tta=args.tta)
    serve(settings, host=args.host, port=args.port, workers=args.workers)
    return 0
