"""Images as zoo feeds them to a network: any file or mode as 8-bit RGB, and evaluation preprocessing.

Every command reads images through ``load_rgb`` (or ``load_rgb_pixels``, its pixels as a tensor): one loader that
bounds memory. An image's pixel count is checked from its header before a pixel is decoded (a 10 KB PNG can claim
81 megapixels), the images decoded at once in a process share ``DECODE_BUDGET`` pixels, and an image read for a
model (``fit``) is reduced right after decoding to about ``WORK_PIXELS``, so a huge one never reaches the resize
whole.
"""

from __future__ import annotations

import io
import math
import struct
import threading
import warnings
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

from zoo.errors import ZooError
from zoo.spec import Preprocessing

# Full-scale value of each high-bit mode. Mode "I" is 32-bit, but in image files it holds 16-bit PNG or
# TIFF data; float ("F") images conventionally span 0..1.
FULL_SCALE = {"I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535, "I": 65535, "F": 1.0}
ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
WHITE = (255, 255, 255, 255)
# The pixel budget of one image: PIL's own decompression-bomb threshold (about 89 megapixels, 268 MB as RGB).
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
# The pixels decoded at once in one process (server requests, predict's threads, data loading): small images
# decode side by side, huge ones wait their turn, so decoding never holds much more than 4 bytes × this.
DECODE_BUDGET = 2 * MAX_PIXELS
# What an image read for a model keeps after decoding: ample for any resize up to zoo's 4096-pixel maximum,
# and small enough that the resize (in float, 12 bytes a pixel) stays near 50 MB.
WORK_PIXELS = 4096 * 1024
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_NOT_REDUCIBLE = {"1": "L", "I;16": "I", "I;16L": "I", "I;16B": "I", "I;16N": "I"}  # PIL's reduce() lacks these


class ImageSizeError(ZooError):
    """An image whose size would take more memory than the pixel budget allows."""


class ThinImageError(ImageSizeError):
    """A strip whose shorter side, resized as a model's preprocessing does, would make too many pixels."""


def check_size(width: int, height: int, fit: int | None = None, max_pixels: int = MAX_PIXELS) -> None:
    """Refuse an image of ``width × height`` over ``max_pixels``, or, resized to ``fit`` on its shorter side (as
    a model's preprocessing does), over ``max_pixels`` then: a 1×1,000,000 strip would grow to a huge image."""
    if width * height > max_pixels:
        raise ImageSizeError(f"the image is {width}×{height} pixels, over the limit of {max_pixels} (a decompression "
                             "bomb is refused before it is decoded): scale it down")
    if fit is not None and fit * fit * max(width, height) > max_pixels * min(width, height):
        raise ThinImageError(f"the image is {width}×{height} pixels: too thin to resize its shorter side to {fit} "
                             f"pixels within {max_pixels} pixels; crop it nearer to square")


class _PixelBudget:
    """A semaphore counted in pixels: a decode takes its image's pixels and gives them back when done."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.free = total
        self.condition = threading.Condition()

    @contextmanager
    def taken(self, pixels: int) -> Iterator[None]:
        pixels = min(pixels, self.total)
        with self.condition:
            self.condition.wait_for(lambda: self.free >= pixels)
            self.free -= pixels
        try:
            yield
        finally:
            with self.condition:
                self.free += pixels
                self.condition.notify_all()


_DECODING = _PixelBudget(DECODE_BUDGET)


@contextmanager
def opened(source: Path | bytes, fit: int | None = None) -> Iterator[Image.Image]:
    """``source`` (a path or a file's bytes) opened, its size checked against the pixel budget (``check_size``)
    and its pixels reserved in the process's decode budget while the block runs: load it there."""
    try:
        with warnings.catch_warnings():  # PIL's warning between its limit and twice it: checked here instead
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    except Image.DecompressionBombError as error:  # PIL's own refusal, beyond twice its threshold
        raise ImageSizeError(f"the image is over the limit of {MAX_PIXELS} pixels ({error}): scale it down") from error
    with image:
        check_size(*image.size, fit)
        with _DECODING.taken(image.width * image.height):
            yield image


def load_rgb(source: Path | bytes, fit: int | None = None) -> Image.Image:
    """Open ``source`` (a path or a file's bytes) as 8-bit RGB: EXIF rotation applied, high-bit images scaled,
    transparency on white.

    ``fit``: the shorter side the image will be resized to; a larger image is then reduced right after decoding
    (see the module's docstring), and a strip that would resize to too many pixels is refused. Raises
    ``ImageSizeError`` for an image over the pixel budget, before decoding it.
    """
    with opened(source, fit) as image:
        factor = _reduction(*image.size, fit)
        if factor > 1 and image.format == "JPEG":
            # JPEG decodes at 1/2, 1/4 or 1/8 scale directly: the full image is never in memory.
            image.draft(image.mode, (image.width // factor, image.height // factor))
        image.load()
        # Phone photos store their rotation in EXIF; without it the network sees them sideways.
        ImageOps.exif_transpose(image, in_place=True)
        factor = _reduction(*image.size, fit)
        if factor == 1:
            return to_rgb(image)
        if image.mode in ("P", "PA") or "transparency" in image.info:
            image = to_rgb(image)  # a palette or a transparent colour cannot be averaged; RGB can
        if image.mode in _NOT_REDUCIBLE:
            image = image.convert(_NOT_REDUCIBLE[image.mode])
        return to_rgb(image.reduce(factor))


def load_rgb_pixels(source: Path | bytes) -> Tensor:
    """``load_rgb(source)`` as a 3×H×W uint8 tensor, the whole image.

    A plain image (an 8-bit RGB or grey PNG or JPEG, without transparency or EXIF) is decoded by OpenCV (libpng,
    libjpeg-turbo) to the same pixels, without PIL's work around the decoder: 2.3× as fast as PIL on 32 px PNGs (1.3×
    as fast as TorchCodec, which decoded them before), 4.1× on 8×8 ones, 1.2× on 500×375 JPEGs
    (``benchmarks/decode.py``). A plain PNG is told from its chunks, not PIL's header parse, which took a third of the
    time of a 32 px PNG.
    """
    from torchvision.transforms.v2.functional import pil_to_tensor

    data = source if isinstance(source, bytes) else Path(source).read_bytes()  # read once, whichever decodes it
    size = plain_png_size(data)
    if size is None:
        with opened(data) as image:
            plain = image.format == "JPEG" and image.mode in ("RGB", "L") and "exif" not in image.info
            size = image.size if plain else None
    decoded = None
    if size is not None:
        check_size(*size)
        with _DECODING.taken(size[0] * size[1]):
            decoded = _decoded_or_none(data)
    return decoded if decoded is not None else pil_to_tensor(load_rgb(data))


def _decoded_or_none(data: bytes) -> Tensor | None:
    """A plain image's pixels decoded by OpenCV; None where it refuses them (PIL reads them then, or says why not)."""
    import cv2

    # IMREAD_IGNORE_ORIENTATION: a plain JPEG has no EXIF, and PIL would not turn it either.
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION)
    return None if pixels is None else torch.from_numpy(pixels).permute(2, 0, 1)


def plain_png_size(data: bytes) -> tuple[int, int] | None:
    """The width and height of an 8-bit grey or RGB PNG, not interlaced, with no transparency (tRNS) or EXIF (eXIf)
    chunk anywhere and every chunk's CRC right; None for any other file (PIL then says what is wrong with a damaged
    one, where libpng would print to stderr). Walking a 32 px PNG's chunks takes about 2 µs, PIL's header parse
    20-30."""
    if len(data) < 33 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    width, height, depth, colour, _, _, interlace = struct.unpack_from(">IIBBBBB", data, 16)
    if depth != 8 or colour not in (0, 2) or interlace:  # 0: grey, 2: RGB
        return None
    view = memoryview(data)  # the CRCs are computed on slices of it, without copies
    offset = len(PNG_SIGNATURE)
    while offset + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, offset)
        end = offset + 8 + length
        if kind in (b"tRNS", b"eXIf") or data[end:end + 4] != zlib.crc32(view[offset + 4:end]).to_bytes(4, "big"):
            return None
        if kind == b"IEND":
            return width, height
        offset += 12 + length  # length, type, data, CRC
    return None  # truncated: PIL says what is wrong with it


def _reduction(width: int, height: int, fit: int | None) -> int:
    """The whole factor that brings an image read for ``fit`` near ``WORK_PIXELS``, its shorter side kept ≥ fit."""
    if fit is None or width * height <= WORK_PIXELS:
        return 1
    return max(1, min(math.floor(math.sqrt(width * height / WORK_PIXELS)), min(width, height) // fit))


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert an image of any mode to 8-bit RGB (see ``load_rgb``)."""
    if image.mode in FULL_SCALE:
        # A plain convert clips 16-bit values at 255, turning most of the image white.
        levels = np.asarray(image, dtype=np.float64) * (255 / FULL_SCALE[image.mode])
        return Image.fromarray(np.clip(np.rint(levels), 0, 255).astype(np.uint8)).convert("RGB")
    if image.mode in ALPHA_MODES or "transparency" in image.info:
        # Transparent pixels keep whatever colour the encoder left there (often black); composite them on
        # white, the background viewers show, instead of letting that colour through as a plain convert does.
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, WHITE), rgba).convert("RGB")
    return image.convert("RGB")


def center_crop_transform(preprocessing: Preprocessing) -> Callable[[Image.Image], Tensor]:
    """Evaluation preprocessing: shorter side to its ``resize``, centre crop ``crop``, float, normalise."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import v2 as T

    return T.Compose([
        T.ToImage(),
        T.Resize(preprocessing.resize, interpolation=InterpolationMode(preprocessing.interpolation), antialias=True),
        T.CenterCrop(preprocessing.crop),
        T.ToDtype(torch.float32, scale=True),
        T.Normalize(list(preprocessing.mean), list(preprocessing.std)),
    ])
