"""zoo's one image loader: a pixel budget checked from the header, huge images reduced as they are read."""

from __future__ import annotations

import io
import struct
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from zoo import images
from zoo.images import MAX_PIXELS, ImageSizeError, ThinImageError, _PixelBudget, load_rgb


def _bomb(width: int, height: int, mode: str = "1") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height)).save(buffer, "PNG")  # a few KB that decode to width × height pixels
    return buffer.getvalue()


def test_an_image_over_the_pixel_budget_is_refused_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(_bomb(9_500, 9_500))
    monkeypatch.setattr(Image.Image, "load", lambda self: pytest.fail("the pixels were decoded"))
    with pytest.raises(ImageSizeError, match=f"9500×9500 pixels, over the limit of {MAX_PIXELS}"):
        load_rgb(path)


def test_a_strip_that_would_resize_to_too_many_pixels_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "strip.png"
    Image.new("L", (1, 1_000_000)).save(path)
    with pytest.raises(ThinImageError, match="too thin to resize its shorter side to 36"):
        load_rgb(path, fit=36)
    assert load_rgb(path).size == (1, 1_000_000)  # read as it is when it is not resized


@pytest.mark.parametrize("mode", ["1", "P", "I;16", "RGBA"])
def test_a_huge_image_read_for_a_model_is_reduced_and_keeps_its_look(mode: str, monkeypatch) -> None:
    monkeypatch.setattr(images, "WORK_PIXELS", 20_000)  # "huge" at a test's scale: 600 × 400 is 12 times it
    image = Image.new("RGB", (600, 400), (200, 40, 40)).convert(mode) if mode != "1" else Image.new(
        "1", (600, 400), 1)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    loaded = load_rgb(buffer.getvalue(), fit=64)
    assert loaded.mode == "RGB"
    assert loaded.size == (200, 134)
    whole = np.asarray(load_rgb(buffer.getvalue()), dtype=np.float64)
    assert np.allclose(np.asarray(loaded).mean(axis=(0, 1)), whole.mean(axis=(0, 1)), atol=1)  # P is dithered
    assert load_rgb(buffer.getvalue(), fit=300).size == (600, 400)  # its shorter side is needed whole


def test_decodes_wait_for_pixels_when_the_budget_is_taken() -> None:
    budget = _PixelBudget(100)
    order: list[str] = []

    def second() -> None:
        with budget.taken(50):
            order.append("second")

    with budget.taken(80):
        waiting = threading.Thread(target=second)
        waiting.start()
        time.sleep(0.2)
        order.append("first done")
    waiting.join(5)
    assert order == ["first done", "second"]
    with budget.taken(10**9):  # more than the whole budget: waits for all of it, never forever
        pass


def _encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _chunks(png: bytes) -> list[bytes]:
    chunks, offset = [], len(images.PNG_SIGNATURE)
    while offset < len(png):
        (length,) = struct.unpack_from(">I", png, offset)
        chunks.append(png[offset : offset + 12 + length])
        offset += 12 + length
    return chunks


def _exif_after_pixels(png: bytes) -> bytes:
    """``png`` with its eXIf chunk moved after the pixel data, where the PNG specification also allows it."""
    chunks = _chunks(png)
    exif = next(chunk for chunk in chunks if chunk[4:8] == b"eXIf")
    rest = [chunk for chunk in chunks if chunk is not exif]
    return images.PNG_SIGNATURE + b"".join(rest[:-1]) + exif + rest[-1]


def _photo_variants() -> dict[str, bytes]:
    from skimage import data

    photo = Image.fromarray(data.astronaut()).resize((96, 72))  # a real photo, small: the loader's common case
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: shown turned a quarter
    transparent = photo.convert("RGBA")
    transparent.putalpha(Image.linear_gradient("L").resize(photo.size))
    return {
        "png rgb": _encoded(photo, "PNG"), "png grey": _encoded(photo.convert("L"), "PNG"),
        "png 16-bit": _encoded(photo.convert("I").point(lambda value: value * 256).convert("I;16"), "PNG"),
        "png palette": _encoded(photo.convert("P"), "PNG"), "png 1-bit": _encoded(photo.convert("1"), "PNG"),
        "png alpha": _encoded(transparent, "PNG"),
        "png transparent colour": _encoded(photo, "PNG", transparency=photo.getpixel((0, 0))),
        "png exif-rotated": _encoded(photo, "PNG", exif=exif),
        "png exif after the pixels": _exif_after_pixels(_encoded(photo, "PNG", exif=exif)),
        "jpeg 4:2:0": _encoded(photo, "JPEG", quality=80), "jpeg 4:4:4": _encoded(photo, "JPEG", subsampling=0),
        "jpeg progressive": _encoded(photo, "JPEG", progressive=True),
        "jpeg grey": _encoded(photo.convert("L"), "JPEG"),
        "jpeg exif-rotated": _encoded(photo, "JPEG", exif=exif), "bmp": _encoded(photo, "BMP"),
    }


@pytest.mark.parametrize("kind", list(_photo_variants()))
def test_pixels_as_a_tensor_are_load_rgbs_pixels_exactly(kind: str, tmp_path: Path) -> None:
    from torchvision.transforms.v2.functional import pil_to_tensor

    encoded = _photo_variants()[kind]
    expected = pil_to_tensor(load_rgb(encoded))
    path = tmp_path / "image"
    path.write_bytes(encoded)
    for source in (encoded, path):
        pixels = images.load_rgb_pixels(source)
        assert pixels.dtype == torch.uint8
        assert pixels.shape == expected.shape
        assert torch.equal(pixels, expected), f"{kind} from {type(source).__name__} differs from load_rgb"


@pytest.mark.parametrize("kind", ["png rgb", "png grey", "jpeg 4:2:0", "jpeg grey"])
def test_plain_images_skip_pil_decoding(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    encoded = _photo_variants()[kind]
    monkeypatch.setattr(images, "load_rgb", lambda *args, **kwargs: pytest.fail("decoded through PIL"))
    if kind.startswith("png"):  # told plain from its chunks: PIL does not even parse the header
        monkeypatch.setattr(Image, "open", lambda *args, **kwargs: pytest.fail("opened by PIL"))
    assert images.load_rgb_pixels(encoded).shape[0] == 3


def test_a_plain_png_is_told_from_its_chunks() -> None:
    variants = _photo_variants()
    plain = {kind for kind in variants if images.plain_png_size(variants[kind]) is not None}
    assert plain == {"png rgb", "png grey"}
    assert images.plain_png_size(variants["png rgb"]) == (96, 72)
    assert images.plain_png_size(variants["png rgb"][:-12]) is None  # no IEND: truncated, PIL says why
    assert images.plain_png_size(b"") is None


def test_a_damaged_png_is_refused_by_pil_with_nothing_printed(capfd: pytest.CaptureFixture[str]) -> None:
    encoded = _photo_variants()["png rgb"]
    damaged = encoded[:200] + bytes(100) + encoded[300:]  # inside the pixel data: its chunk's CRC is wrong
    assert images.plain_png_size(damaged) is None
    with pytest.raises(OSError, match="data stream"):
        images.load_rgb_pixels(damaged)
    assert capfd.readouterr().err == ""  # libpng would have printed its own error line


def test_pixels_as_a_tensor_keep_the_pixel_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    bomb = _bomb(9_500, 9_500, "L")  # a plain grey PNG: the kind decoded without PIL
    monkeypatch.setattr(Image.Image, "load", lambda self: pytest.fail("the pixels were decoded"))
    monkeypatch.setattr("cv2.imdecode", lambda *args, **kwargs: pytest.fail("decoded"))
    with pytest.raises(ImageSizeError, match="9500×9500 pixels"):
        images.load_rgb_pixels(bomb)


def test_an_image_opencv_refuses_is_read_by_pil(monkeypatch: pytest.MonkeyPatch) -> None:
    from torchvision.transforms.v2.functional import pil_to_tensor

    monkeypatch.setattr("cv2.imdecode", lambda *args, **kwargs: None)  # how OpenCV says it cannot decode
    for kind in ("png rgb", "jpeg 4:2:0"):
        encoded = _photo_variants()[kind]
        assert torch.equal(images.load_rgb_pixels(encoded), pil_to_tensor(load_rgb(encoded)))
