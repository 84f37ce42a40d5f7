"""An uploaded image, read and decoded defensively: every bad input is a ``RequestError`` naming the problem.

A body is read only up to its limit (a huge upload never fills memory), and an image's size is checked from
its header before a pixel is decoded (a decompression bomb is refused before it expands).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator

from PIL import Image, UnidentifiedImageError
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request

from zoo.errors import shorten
from zoo.images import ImageSizeError, ThinImageError, load_rgb

FIELD = "file"
# Boundaries and part headers around the file in a multipart body; its file part alone is held to max_bytes.
MULTIPART_OVERHEAD = 64 * 1024
# A refused body is read on (and dropped) up to this many times the limit, so that an ordinary client, still
# sending, reads the 413 instead of a reset connection; beyond it the connection is closed.
DRAIN_FACTOR = 4
HOW = f"send one image as multipart form field '{FIELD}', or as the body with an image content type (image/jpeg, …)"


class RequestError(Exception):
    """Bad input from a client, answered with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _too_large(max_bytes: int, size: int | None = None) -> RequestError:
    """A 413; ``size`` is None when the body was not read to its end."""
    measured = f"{size} bytes, " if size is not None else ""
    return RequestError(413, f"the upload is {measured}over the server's limit of {max_bytes} bytes "
                             "(zoo serve --max-bytes)")


async def _read_capped(stream: AsyncIterator[bytes], limit: int, max_bytes: int) -> bytes:
    """The body, or a 413 as soon as it passes ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in stream:
        size += len(chunk)
        if size > limit:
            async for rest in stream:
                size += len(rest)
                if size > DRAIN_FACTOR * limit:
                    break
            raise _too_large(max_bytes, None if size > DRAIN_FACTOR * limit else size)
        chunks.append(chunk)
    return b"".join(chunks)


async def _file_field(request: Request, body: bytes) -> bytes:
    """The content of the multipart field ``file`` of ``body``."""

    async def single_chunk() -> AsyncGenerator[bytes, None]:
        yield body

    try:
        form = await MultiPartParser(request.headers, single_chunk(), max_files=1, max_fields=16).parse()
    except MultiPartException as error:
        raise RequestError(400, f"malformed multipart body ({error.message}): {HOW}") from error
    try:
        upload = form.get(FIELD)
        if not isinstance(upload, UploadFile):
            raise RequestError(400, f"no file in multipart field '{FIELD}': {HOW}")
        return await upload.read()
    finally:
        await form.close()


async def read_upload(request: Request, max_bytes: int) -> bytes:
    """The image bytes of a ``POST /predict`` or ``/explain``: a multipart field ``file`` or a raw image body."""
    media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    multipart = media == "multipart/form-data"
    if not (multipart or media.startswith("image/")):
        raise RequestError(415, f"unsupported content type '{shorten(media, 80) or 'none'}': {HOW}")
    limit = max_bytes + MULTIPART_OVERHEAD if multipart else max_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > DRAIN_FACTOR * limit:
        raise _too_large(max_bytes, int(declared))  # not worth reading: the connection is closed after the answer
    try:
        body = await _read_capped(request.stream(), limit, max_bytes)
    except ClientDisconnect as error:  # the client left mid-upload: nobody reads the answer, nothing to log
        raise RequestError(400, "the client disconnected before the upload ended") from error
    data = await _file_field(request, body) if multipart and body else body
    if not data:
        raise RequestError(400, f"the upload is empty: {HOW}")
    if len(data) > max_bytes:
        raise _too_large(max_bytes, len(data))
    return data


def decode_image(data: bytes, resize: int) -> Image.Image:
    """``data`` as 8-bit RGB through zoo's one image loader (``zoo.images.load_rgb``), checked before decoding.

    ``resize`` is the model's: an image is resized to it on its shorter side, so a thin strip would grow to a
    huge tensor; the loader refuses it, as it refuses a decompression bomb, before a pixel is decoded.
    """
    try:
        return load_rgb(data, fit=resize)
    except UnidentifiedImageError as error:
        raise RequestError(400, f"not an image: no image format recognises these {len(data)} bytes; {HOW}") from error
    except ThinImageError as error:
        raise RequestError(422, str(error)) from error
    except ImageSizeError as error:
        raise RequestError(413, str(error)) from error
    # Image plugins raise many kinds of error on a damaged header or file; none may reach the client as a 500.
    except Exception as error:
        raise _damaged(error) from error


def _damaged(error: Exception) -> RequestError:
    reason = shorten(str(error) or type(error).__name__)
    return RequestError(400, f"the image is truncated or damaged ({reason}): send the whole file")
