"""``zoo serve`` under concurrent clients: requests per second, latency and errors, with and without batching.

    python -m benchmarks.serve [--clients 8] [--requests 25] [--archs small_cnn,resnet18]

Each architecture is trained for a few steps (the weights do not change the speed) and exported; then the real
``zoo serve`` command runs it in its own process on 127.0.0.1, and ``--clients`` threads, each with its own
connection, post ``--requests`` JPEG photos (500×375, a phone preview's size) one after another as multipart
uploads. Every architecture is served twice: ``--max-batch-size 1`` (no batching) and the default 32. Latency
is one request's round trip as its client waits for it; errors are non-200 answers and failed connections.
The clients run on the same cores as the server, as a benchmark on one machine must.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from benchmarks.common import photos_folder, silenced, table, write_results
from finetune.config import RunConfig, merge
from finetune.shipping.export import export
from finetune.training.run import train

BATCH_SIZES = (1, 32)
WARM_UP = 10  # requests before timing: the first batches pay for allocations and lazy imports
TIMEOUT = 120  # seconds for the server to start, and for one request


def make_bundle(arch: str, images: Path, root: Path) -> Path:
    """A 2-step run of ``arch`` from scratch on ``images``, exported."""
    config = merge(RunConfig(), {
        "data": {"path": str(images), "batch_size": 8, "augment": "none", "num_workers": 0, "cache": "none"},
        "model": {"arch": arch, "weights": "none"},
        "trainer": {"epochs": 1, "max_steps": 2, "seed": 0, "accelerator": "cpu"},
        "out": str(root / f"run-{arch}"),
    })
    with silenced():
        run_dir = train(config).run_dir
    return export(run_dir, ["safetensors"], root / f"bundle-{arch}").out_dir


def start(bundle: Path, log: Path, max_batch_size: int) -> tuple[subprocess.Popen[bytes], str]:
    """``zoo serve`` on a free port, once it answers ``/health``; its process and address."""
    command = [sys.executable, "-m", "zoo_cli.main", "serve", str(bundle), "--port", "0",
               "--max-batch-size", str(max_batch_size)]
    with log.open("wb") as output:  # a file: the access log would fill a pipe nobody reads
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline and process.poll() is None:
        lines = [line for line in log.read_text(encoding="utf-8").splitlines() if line.startswith("zoo serve: ")]
        if lines:
            url = lines[0].split(" at ")[1].split()[0]
            try:
                requests.get(url + "health", timeout=TIMEOUT).raise_for_status()
                return process, url
            except requests.ConnectionError:
                pass
        time.sleep(0.2)
    process.kill()
    raise SystemExit(f"zoo serve did not start: {log.read_text(encoding='utf-8')[-2000:]}")


def client(url: str, photo: bytes, count: int) -> list[tuple[float, bool, int]]:
    """``count`` uploads in a row on one connection: (seconds, answered 200, batch size) each."""
    results = []
    with requests.Session() as session:
        for _ in range(count):
            started = time.perf_counter()
            try:
                response = session.post(url + "predict", files={"file": ("photo.jpg", photo)}, timeout=TIMEOUT)
                ok, batch = response.status_code == 200, int(response.headers.get("X-Batch-Size", 0))
            except requests.RequestException:
                ok, batch = False, 0
            results.append((time.perf_counter() - started, ok, batch))
    return results


def measure(url: str, photo: bytes, clients: int, count: int) -> dict[str, object]:
    client(url, photo, WARM_UP)
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = [row for rows in pool.map(lambda _: client(url, photo, count), range(clients)) for row in rows]
    elapsed = time.perf_counter() - started
    latencies = sorted(seconds * 1000 for seconds, _, _ in results)
    batches = [batch for _, ok, batch in results if ok]
    return {
        "requests/s": f"{len(results) / elapsed:.1f}",
        "p50 ms": f"{statistics.median(latencies):.1f}",
        "p95 ms": f"{latencies[round(0.95 * (len(latencies) - 1))]:.1f}",
        "mean batch": f"{statistics.fmean(batches):.2f}" if batches else "–",
        "errors": sum(1 for _, ok, _ in results if not ok),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=25, help="per client")
    parser.add_argument("--archs", default="small_cnn,resnet18")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        root = Path(workdir)
        images = photos_folder(root / "photos", classes=3, per_class=8)
        photo = sorted(images.glob("*/*.jpg"))[0].read_bytes()
        for arch in args.archs.split(","):
            bundle = make_bundle(arch, images, root)
            for max_batch_size in BATCH_SIZES:
                process, url = start(bundle, root / f"{arch}-{max_batch_size}.log", max_batch_size)
                try:
                    row = {"arch": arch, "--max-batch-size": max_batch_size,
                           **measure(url, photo, args.clients, args.requests)}
                finally:
                    process.terminate()
                    process.wait(TIMEOUT)
                print(row, flush=True)
                rows.append(row)
    print("\n" + table(rows))
    body = (f"{args.clients} clients × {args.requests} requests each (after {WARM_UP} warm-up requests), one "
            f"{len(photo) // 1000} kB 500×375 JPEG as a multipart upload, `zoo serve` with one worker on 127.0.0.1; "
            f"latency is a request's round trip; mean batch is the batch size the server reports per answer.\n\n"
            f"{table(rows)}")
    write_results("serve", "serve: concurrent clients against zoo serve", body)


if __name__ == "__main__":
    main()
