"""Milliseconds to decode an image to a uint8 tensor: through PIL (``load_rgb``) against ``load_rgb_pixels``.

    flock /tmp/zoo-bench.lock python -m benchmarks.decode [--rounds 5] [--images 400]

What byte shards and the decode-once cache pay for each image before it is resized: the built-in 8×8 digit PNGs,
32 px PNGs of colour under noise (the scale benchmark's), and 500×375 JPEG photos, read from their bytes on one
thread. The two loaders run in turns on the same images; each round's figure is the mean over the images, and the
pixels of the two are checked equal.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision.transforms.v2.functional import pil_to_tensor

from benchmarks.common import digits_folder, interleaved, median, photos_folder, spread, table, write_results
from zoo.images import load_rgb, load_rgb_pixels

MAX_ROUNDS = 100
MAX_IMAGES = 1797  # the built-in digits there are
LOADERS: dict[str, Callable[[bytes], Tensor]] = {
    "PIL": lambda data: pil_to_tensor(load_rgb(data)), "load_rgb_pixels": load_rgb_pixels}


def noise_pngs(count: int) -> list[bytes]:
    """32 px PNGs of a colour under noise, as ``benchmarks/scale.py`` writes them."""
    rng = np.random.default_rng(0)
    encoded = []
    for _ in range(count):
        pixels = np.clip(rng.integers(0, 256, 3) + rng.normal(0, 40, (32, 32, 3)), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        encoded.append(buffer.getvalue())
    return encoded


def files(folder: Path, count: int) -> list[bytes]:
    return [path.read_bytes() for path in sorted(folder.rglob("*.*"))[:count] if path.is_file()]


def per_image_ms(load: Callable[[bytes], Tensor], images: list[bytes]) -> float:
    started = time.perf_counter()
    for data in images:
        load(data)
    return 1000 * (time.perf_counter() - started) / len(images)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--images", type=int, default=400, help="images of each kind")
    args = parser.parse_args(argv)
    if not 1 <= args.rounds <= MAX_ROUNDS:
        parser.error(f"--rounds {args.rounds}: give 1 to {MAX_ROUNDS} rounds")
    if not 5 <= args.images <= MAX_IMAGES:  # the photos come 5 a class
        parser.error(f"--images {args.images}: give 5 to {MAX_IMAGES} images of each kind")
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="zoo-decode-") as workdir:
        digits = digits_folder(Path(workdir) / "digits", -(-args.images // 10), 0)  # 10 classes
        kinds = {
            "digits (8×8 grey PNG)": files(digits, args.images),
            "32 px RGB PNG": noise_pngs(args.images),
            "500×375 JPEG photo": files(photos_folder(Path(workdir) / "photos", 5, args.images // 5), args.images),
        }
    rows = []
    for kind, images in kinds.items():
        for data in images:
            if not torch.equal(LOADERS["PIL"](data), load_rgb_pixels(data)):
                raise SystemExit(f"{kind}: load_rgb_pixels gave other pixels than PIL")
        times: dict[str, list[float]] = {name: [] for name in LOADERS}
        for _, name in interleaved(list(LOADERS), args.rounds):
            times[name].append(per_image_ms(LOADERS[name], images))
        rows.append({"images": f"{kind}, {len(images)}", "PIL ms": spread(times["PIL"], 3),
                     "load_rgb_pixels ms": spread(times["load_rgb_pixels"], 3),
                     "PIL / load_rgb_pixels": f"{median(times['PIL']) / median(times['load_rgb_pixels']):.2f}×",
                     "same pixels": "yes"})
        print(table(rows[-1:]), flush=True)
    body = (f"One thread, {args.rounds} rounds in turns, each the mean over the images; median (min–max) over "
            f"rounds.\n\n{table(rows)}")
    print("\n" + body)
    write_results("decode", "decode: an image to a uint8 tensor, through PIL and load_rgb_pixels", body)


if __name__ == "__main__":
    main()
