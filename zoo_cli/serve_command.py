"""``zoo serve``: a trained model behind an HTTP API, with a page to try it in a browser."""

from __future__ import annotations

import argparse
from pathlib import Path

from finetune.shipping.settings import ListenSettings, ServeSettings
from zoo_cli.flags import add_settings_flags
from zoo_cli.model_commands import SOURCE_HELP


def add_parsers(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser("serve",
                                help="serve a trained model over HTTP: POST /predict, GET /metadata, a page at /")
    serve.add_argument("source", type=Path, metavar="SOURCE", help=SOURCE_HELP)
    add_settings_flags(serve, ListenSettings)
    add_settings_flags(serve, ServeSettings)
    serve.set_defaults(run=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    from finetune.shipping.serve.server import serve

    settings = ServeSettings(str(args.source), max_batch_size=args.max_batch_size, max_bytes=args.max_bytes,
                             tta=args.tta)
    serve(settings, host=args.host, port=args.port, workers=args.workers)
    return 0
