"""The HTTP API of ``zoo serve`` (FastAPI): ``POST /predict``, ``POST /explain``, ``GET /health``, ``GET /metadata``
and the page."""

from __future__ import annotations

import json
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from importlib.resources import files
from typing import Any

import torch
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from torch import Tensor

from finetune.runtime.processes import die_with_parent, give_back_freed_memory
from finetune.shipping.serve.batching import Batcher
from finetune.shipping.serve.overlay import default_layer, overlay
from finetune.shipping.serve.uploads import RequestError, decode_image, read_upload
from finetune.shipping.settings import ServeSettings
from finetune.shipping.sources import Source, load_source
from zoo.errors import shorten

DEFAULT_TOP_K = 5
SETTINGS_VARIABLE = "ZOO_SERVE_SETTINGS"  # how worker processes, which import the app anew, get its settings


def model_metadata(source: Source, layer: str | None) -> dict[str, Any]:
    """``GET /metadata``: what the model is, how it preprocesses, how well it did on held-out images, and the
    layer ``POST /explain`` looks at (None: no convolutional stage, no overlay)."""
    metadata = source.model.metadata
    return {
        "arch": metadata.arch,
        "weights": metadata.weights,
        "classes": source.model.classes,
        "num_classes": len(source.model.classes),
        "preprocessing": {"resize": metadata.preprocessing.resize, "image_size": metadata.image_size,
                          **{key: getattr(metadata.preprocessing, key) for key in ("interpolation", "mean", "std")}},
        "temperature": source.model.temperature,
        # Each null when unknown; the test figures are the unbiased ones (validation chose the checkpoint).
        "test": source.measured["test"],
        "validation": source.measured["validation"],
        "explain": {"method": "gradcam", "layer": layer} if layer is not None else None,
    }


def _top_k(request: Request, classes: int) -> int:
    text = request.query_params.get("top_k", str(DEFAULT_TOP_K))
    # ASCII digits only: str.isdigit() also takes "²", which int() refuses; and no 5,000-digit number.
    if not re.fullmatch(r"[0-9]{1,9}", text) or int(text) < 1:
        raise RequestError(400, f"top_k must be a whole number of at least 1, got '{text[:40]}'")
    return min(int(text), classes)


def _target(request: Request, classes: list[str]) -> int | None:
    """The class ``POST /explain?class=NAME`` asks for; None: the top-1 class."""
    name = request.query_params.get("class")
    if name is None:
        return None
    if name not in classes:
        known = ", ".join(classes) if len(classes) <= 20 else f"{len(classes)} of them, see GET /metadata"
        raise RequestError(400, f"unknown class '{shorten(name, 80)}': the model's classes are {known}")
    return classes.index(name)


def create_app(source: Source, settings: ServeSettings) -> FastAPI:
    """The server of one loaded model."""
    model, resize = source.model, source.model.metadata.preprocessing.resize
    batcher = Batcher(model.predict_proba, settings.max_batch_size)
    summary = {"arch": model.metadata.arch, "num_classes": len(model.classes)}
    layer = default_layer(model)
    page = files("finetune.shipping.serve").joinpath("page.html").read_text(encoding="utf-8")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="zoo serve", lifespan=lifespan, docs_url=None, redoc_url=None)

    @app.exception_handler(RequestError)
    async def request_error(request: Request, error: RequestError) -> JSONResponse:
        return JSONResponse({"error": error.message}, status_code=error.status)

    @app.exception_handler(HTTPException)  # unknown paths and methods: the same {"error"} shape as the rest
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        return JSONResponse({"error": f"{request.method} {request.url.path}: {error.detail}"},
                            status_code=error.status_code, headers=error.headers)

    def preprocess(data: bytes) -> Tensor:
        return model.transform(decode_image(data, resize))

    @app.post("/predict")
    async def predict(request: Request) -> JSONResponse:
        k = _top_k(request, len(model.classes))
        data = await read_upload(request, settings.max_bytes)
        # Decoding and preprocessing run in threads (PIL and torch release the GIL), in parallel across requests.
        probabilities, batch_size = await batcher.submit(await run_in_threadpool(preprocess, data))
        values, indices = probabilities.topk(k)
        predictions = [{"class": model.classes[index], "probability": round(value, 6)}
                       for value, index in zip(values.tolist(), indices.tolist(), strict=True)]
        # The batch size tells a client (and benchmarks/serve.py) how much batching the load brought.
        return JSONResponse({"predictions": predictions, "model": summary},
                            headers={"X-Batch-Size": str(batch_size)})

    @app.post("/explain")
    async def explain(request: Request) -> JSONResponse:
        if layer is None:
            raise RequestError(404, f"{summary['arch']} has no convolutional stage for a Grad-CAM overlay")
        target = _target(request, model.classes)
        data = await read_upload(request, settings.max_bytes)
        image = await run_in_threadpool(decode_image, data, resize)
        # On the model's thread, between batches: Grad-CAM hooks the network the batches run on.
        result = await batcher.exclusive(overlay, model, layer, image, target)
        return JSONResponse({"class": model.classes[result.class_index], "probability": result.probability,
                             "method": "gradcam", "layer": layer, "overlay": result.data_url()})

    @app.api_route("/health", methods=["GET", "HEAD"])
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.api_route("/metadata", methods=["GET", "HEAD"])
    async def metadata() -> dict[str, Any]:
        return model_metadata(source, layer)

    @app.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse)
    async def index() -> str:
        return page

    return app


def app_from_environment() -> FastAPI:
    """The app of a worker process started by uvicorn, from the settings ``serve`` put in its environment."""
    # A worker serves only while ``zoo serve`` lives: killed, even by SIGKILL, it must not leave them holding the
    # port and a copy of the model each.
    die_with_parent()
    give_back_freed_memory()
    settings = ServeSettings(**json.loads(os.environ[SETTINGS_VARIABLE]))
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    return create_app(load_source(settings.source, tta=settings.tta), settings)


def settings_environment(settings: ServeSettings) -> dict[str, str]:
    return {SETTINGS_VARIABLE: json.dumps(asdict(settings))}
