"""``serve``: run the HTTP API of a model with uvicorn, in one process or several worker processes."""

from __future__ import annotations

import os
import socket
from dataclasses import replace

import uvicorn
from uvicorn.supervisors import Multiprocess

from finetune.runtime.hardware import usable_cores
from finetune.runtime.processes import LAUNCHER_PID_ENV, give_back_freed_memory
from finetune.shipping.serve.app import ServeSettings, create_app, settings_environment
from finetune.shipping.settings import ListenSettings
from finetune.shipping.sources import load_source
from zoo.errors import ZooError

APP_FACTORY = "finetune.shipping.serve.app:app_from_environment"  # what each worker process imports


def _listen(host: str, port: int) -> socket.socket:
    """A bound socket (its port chosen by the system when ``port`` is 0), or one line saying why not."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise ZooError(f"cannot listen on {host}:{port} ({error.strerror or error}): choose another --port "
                       "or --host") from error
    sock.set_inheritable(True)  # worker processes serve on it
    return sock


def serve(settings: ServeSettings, host: str = ListenSettings.host, port: int = ListenSettings.port,
          workers: int = ListenSettings.workers) -> None:
    """Serve ``settings.source`` until interrupted; ``workers`` processes each hold a copy of the model."""
    if not 0 <= port <= 65535:
        raise ZooError(f"--port must be from 0 (any free port) to 65535, got {port}")
    for name, value in (("--workers", workers), ("--max-batch-size", settings.max_batch_size),
                        ("--max-bytes", settings.max_bytes)):
        if value < 1:
            raise ZooError(f"{name} must be at least 1, got {value}")
    if workers > usable_cores():  # each worker holds a copy of the model: more than cores only adds memory
        raise ZooError(f"--workers {workers} is more than the {usable_cores()} cores of this machine (each worker "
                       f"holds a copy of the model): use --workers {usable_cores()} or fewer")
    give_back_freed_memory()
    if workers == 1:
        config = uvicorn.Config(create_app(load_source(settings.source, tta=settings.tta), settings))
    else:
        # A bad source (or --tta) is one line here, not a traceback per worker.
        load_source(settings.source, device="cpu", tta=settings.tta)
        # Each process runs its batches on its share of the cores, instead of all of them fighting for every core.
        settings = replace(settings, threads=max(1, usable_cores() // workers))
        os.environ.update({**settings_environment(settings), LAUNCHER_PID_ENV: str(os.getpid())})
        config = uvicorn.Config(APP_FACTORY, factory=True, workers=workers)
    sock = _listen(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    address = f"[{bound_host}]" if ":" in bound_host else bound_host  # an IPv6 address in a URL
    print(f"zoo serve: {settings.source} at http://{address}:{bound_port}/ ({workers} worker"
          f"{'s' if workers > 1 else ''}, batches of up to {settings.max_batch_size}); Ctrl-C stops it", flush=True)
    with sock:
        if workers > 1:
            Multiprocess(config, sockets=[sock]).run()
        else:
            uvicorn.Server(config).run(sockets=[sock])
