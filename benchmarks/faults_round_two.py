"""Round two of ``benchmarks.faults``: escapes, memory bombs, orphans, resume races and values that give NaN.

Each case returns a ``Result`` as round one's do; two outcomes are new: ``escape`` (an ESC or BEL byte from a
file or folder name reached the terminal) and ``memory`` (a peak over ``MEMORY_MARGIN`` above the same command
on an ordinary image). Peak memory is the kernel's high-water mark (``VmHWM``) of the process.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from PIL import Image

MEMORY_MARGIN = 1.5 * 2**30  # bytes over the idle process a hostile image may cost
HOSTILE = "\x1b]0;pwned\x07\x1b[2J"  # sets the terminal's title, then clears the screen
RAW = ("\x1b", "\x07")
CONCURRENT = 8


def _escaped(*texts: str) -> bool:
    return not any(byte in text for text in texts for byte in RAW)


def bomb_png(path: Path, width: int, height: int) -> Path:
    """A 1-bit PNG of ``width × height``: a few KB on disk, ``width × height`` bytes and more decoded."""
    Image.new("1", (width, height)).save(path, optimize=True)
    return path


def _peak_of(command: list[str], timeout: float) -> tuple[subprocess.CompletedProcess[str], int]:
    """Run ``command`` and return it with its peak resident memory in bytes."""
    measure = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(r.returncode)")
    result = subprocess.run([sys.executable, "-c", measure, *command], capture_output=True, text=True,
                            timeout=timeout)
    lines = result.stderr.strip().splitlines()
    peak = int(lines[-1]) * 1024
    return subprocess.CompletedProcess(command, result.returncode, result.stdout, "\n".join(lines[:-1])), peak


def _zoo(*args: str) -> list[str]:
    return [sys.executable, "-m", "zoo_cli.main", *args]


def _status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


@contextmanager
def served(source: Path, log: Path, *options: str,
           timeout: float = 180) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``zoo serve SOURCE`` on 127.0.0.1, a free port; yields the process and its base URL; stopped after."""
    with log.open("wb") as output:
        process = subprocess.Popen(_zoo("serve", str(source), "--port", "0", "--host", "127.0.0.1", *options),
                                   stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        url = None
        while url is None and time.monotonic() < deadline and process.poll() is None:
            lines = [line for line in log.read_text(errors="replace").splitlines() if " at http://" in line]
            if lines:
                candidate = lines[0].split(" at ")[1].split()[0]
                try:
                    with urllib.request.urlopen(candidate + "health", timeout=10):
                        url = candidate
                except OSError:
                    pass
            time.sleep(0.2)
        if url is None:
            raise TimeoutError(f"zoo serve did not start: {log.read_text(errors='replace')[-300:]}")
        yield process, url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _post(url: str, data: bytes, content_type: str = "image/png", timeout: float = 180) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=data, headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def serve_concurrent_bombs(bench, result_type) -> object:
    """8 concurrent 81-megapixel PNGs to ``zoo serve``: every one answered, peak memory bounded, serving after."""
    bomb = bomb_png(bench.fresh("bomb.png"), 9000, 9000).read_bytes()
    with served(bench.bundle, bench.fresh("serve.log")) as (process, url):
        idle = _status_kb(process.pid, "VmRSS") * 1024
        answers: list[int] = []
        threads = [threading.Thread(target=lambda: answers.append(_post(url + "predict", bomb)[0]))
                   for _ in range(CONCURRENT)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
        seconds = time.perf_counter() - started
        peak = _status_kb(process.pid, "VmHWM") * 1024
        after = _status_kb(process.pid, "VmRSS") * 1024
        healthy = urllib.request.urlopen(url + "health", timeout=10).status == 200
    over = peak - idle
    detail = (f"{answers.count(200)}/{CONCURRENT} answered 200 in {seconds:.1f} s; idle {idle / 2**20:.0f} MB, peak "
              f"+{over / 2**20:.0f} MB, after +{(after - idle) / 2**20:.0f} MB")
    if answers.count(200) != CONCURRENT or not healthy:
        return result_type("wrong", detail)
    return result_type("handled" if over <= MEMORY_MARGIN else "memory", detail)


def _cli_peak(bench, result_type, command: str, hostile: Path, extra: tuple[str, ...] = ()) -> object:
    """``zoo COMMAND BUNDLE hostile`` against the same on an ordinary image: the extra peak memory it costs."""
    ordinary = next(bench.images.glob("*/*.jpg"))
    out = ("--out", str(bench.fresh("out"))) if command == "explain" else ()
    baseline, idle = _peak_of(_zoo(command, str(bench.bundle), str(ordinary), *out, *extra), 300)
    out = ("--out", str(bench.fresh("out"))) if command == "explain" else ()
    started = time.perf_counter()
    result, peak = _peak_of(_zoo(command, str(bench.bundle), str(hostile), str(ordinary), *out, *extra), 300)
    seconds = time.perf_counter() - started
    if "Traceback" in result.stderr or baseline.returncode:
        return result_type("traceback", (result.stderr.strip().splitlines() or [""])[-1][:120])
    detail = f"exit {result.returncode} in {seconds:.1f} s, peak +{(peak - idle) / 2**20:.0f} MB over an ordinary image"
    return result_type("handled" if peak - idle <= MEMORY_MARGIN else "memory", detail)


def killed_server_leaves_no_worker(bench, result_type) -> object:
    """kill -9 of ``zoo serve --workers 2``: its workers end too, and the port is free again."""
    with served(bench.bundle, bench.fresh("serve.log"), "--workers", "2") as (process, url):
        children = [int(pid) for pid in os.listdir("/proc") if pid.isdigit() and _parent(int(pid)) == process.pid]
        process.kill()
        process.wait()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(_alive(pid) for pid in children):
            time.sleep(0.2)
        left = [pid for pid in children if _alive(pid)]
        port = int(url.rsplit(":", 1)[1].strip("/"))
        for pid in left:
            os.kill(pid, signal.SIGKILL)
    if left:
        return result_type("hang", f"{len(left)} of {len(children)} worker processes still alive 20 s later")
    with socket.socket() as probe:
        free = probe.connect_ex(("127.0.0.1", port)) != 0
    return result_type("handled" if free else "hang",
                       f"its {len(children)} child processes ended; port {'free' if free else 'still served'}")


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def two_resumes_at_once(bench, result_type, epochs_of: Callable[[Path], list[int]]) -> object:
    """Two ``zoo finetune --resume RUN`` at once: the second is refused, no epoch is written twice."""
    run = bench.copy(bench.base)
    command = _zoo("finetune", "--resume", str(run), "--epochs", "1000")  # no --patience: never stops early
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while len(epochs_of(run)) < 2 and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.1)
    second = subprocess.run(command, capture_output=True, text=True, timeout=180)
    first.send_signal(signal.SIGINT)  # Ctrl-C: last.ckpt saved, the resume command printed
    first.communicate(timeout=300)
    epochs = epochs_of(run)
    if "Traceback" in second.stderr:
        return result_type("traceback", second.stderr.strip().splitlines()[-1][:120])
    if second.returncode != 2 or epochs != list(range(1, len(epochs) + 1)):
        return result_type("wrong", f"exits {first.returncode}, {second.returncode}; epochs {epochs[:8]}…")
    return result_type("nothing lost", f"the second refused in one line ({second.stderr.strip()[14:80]}…); epochs "
                                       f"1-{len(epochs)} once each")


def escapes_in_a_run(bench, result_type) -> object:
    """Class folders and the run folder named with escape sequences and a line break: finetune, then evaluate."""
    images = bench.fresh("hostile-images")
    for index, folder in enumerate(sorted(bench.images.iterdir())):
        name = f"class{HOSTILE}\nline" if index == 0 else folder.name
        shutil.copytree(folder, images / name)
    few = images / f"few{HOSTILE}"  # too few images for every split: the "classes have no val/test images" line
    few.mkdir()
    shutil.copy(next(bench.images.glob("*/*.jpg")), few / "0.jpg")
    run = Path(str(bench.fresh("run")) + HOSTILE)
    from benchmarks.faults import RUN
    trained = subprocess.run(_zoo("finetune", "--data", str(images), "--out", str(run), *RUN, "--epochs", "1"),
                             capture_output=True, text=True, timeout=300)
    evaluated = subprocess.run(_zoo("evaluate", str(run), "--out", str(bench.fresh("eval"))), capture_output=True,
                               text=True, timeout=300)
    texts = (trained.stdout, trained.stderr, evaluated.stdout, evaluated.stderr)
    if any("Traceback" in text for text in texts):
        return result_type("traceback", "in finetune or evaluate")
    if not _escaped(*texts):
        return result_type("escape", "ESC or BEL reached the terminal")
    split_lines = sum(line.startswith("line") for text in texts for line in text.splitlines())
    if trained.returncode or evaluated.returncode or split_lines:
        return result_type("wrong", f"exits {trained.returncode}, {evaluated.returncode}; {split_lines} split lines")
    return result_type("handled", "every name printed with \\x1b, \\x07, \\n written out; no glyph warning")


def escape_in_served_path(bench, result_type) -> object:
    """``zoo serve`` of a bundle whose folder name holds escape sequences: its address line is escaped."""
    bundle = Path(shutil.copytree(bench.bundle, str(bench.fresh("bundle")) + HOSTILE))
    log = bench.fresh("serve.log")
    with served(bundle, log):
        pass
    text = log.read_text(errors="replace")
    return result_type("handled" if _escaped(text) else "escape", text.splitlines()[0][:100] if text else "no output")


def client_disconnects(bench, result_type) -> object:
    """Clients that send half an upload and leave: no traceback in the server's log, the server answers after."""
    log = bench.fresh("serve.log")
    with served(bench.bundle, log) as (_, url):
        host, port = url.split("//")[1].strip("/").split(":")
        for _ in range(20):
            with socket.create_connection((host, int(port)), timeout=10) as client:
                client.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                               b"Content-Length: 100000\r\n\r\n" + bytes(1000))
        time.sleep(1)
        status, _ = _post(url + "predict", (next(bench.images.glob("*/*.jpg"))).read_bytes(), "image/jpeg")
    text = log.read_text(errors="replace")
    lines = len(text.splitlines())
    if "Traceback" in text:
        return result_type("traceback", f"{text.count('Traceback')} tracebacks in the log ({lines} lines)")
    return result_type("handled" if status == 200 else "wrong", f"20 clients left mid-upload; log {lines} lines, "
                                                                 f"then a request answered {status}")


def http_edge_cases(bench, result_type) -> object:
    """``top_k=²`` (a digit to str.isdigit, not to int) and HEAD on GET routes: JSON 4xx and 200, no 500."""
    with served(bench.bundle, bench.fresh("serve.log")) as (_, url):
        photo = next(bench.images.glob("*/*.jpg")).read_bytes()
        status, body = _post(url + "predict?top_k=%C2%B2", photo, "image/jpeg")
        head = urllib.request.urlopen(urllib.request.Request(url + "health", method="HEAD"), timeout=10).status
    ok = status == 400 and "top_k" in body.get("error", "") and head == 200
    return result_type("handled" if ok else "wrong", f"top_k=²: {status} {body.get('error', '')[:50]}; HEAD {head}")


def fewer_epochs(bench, result_type, zoo: Callable, one_line_error: Callable) -> object:
    """``--resume RUN --epochs 2`` on a 3-epoch run: one line, and config.yaml as it was (resumable as before)."""
    run = bench.copy(bench.base)
    zoo("finetune", "--resume", str(run), "--epochs", "3")
    before = (run / "config.yaml").read_bytes()
    verdict = one_line_error(zoo("finetune", "--resume", str(run), "--epochs", "2"), "already trained")
    if verdict.outcome == "one-line error" and (run / "config.yaml").read_bytes() != before:
        return result_type("wrong", "config.yaml was rewritten")
    return verdict


def fifo_in_run(bench, result_type, one_line_error: Callable, name: str) -> object:
    """A run folder whose ``name`` is a FIFO: zoo evaluate says so in one line instead of waiting forever."""
    run = bench.copy(bench.base)
    (run / name).unlink()
    os.mkfifo(run / name)
    result = subprocess.run(_zoo("evaluate", str(run), "--out", str(bench.fresh("eval"))), capture_output=True,
                            text=True, timeout=120)
    return one_line_error(result, "regular file")


def binary_split_file(bench, result_type, one_line_error: Callable) -> object:
    run = bench.copy(bench.base)
    (run / "test.csv").write_bytes(os.urandom(2000))
    result = subprocess.run(_zoo("evaluate", str(run), "--out", str(bench.fresh("eval"))), capture_output=True,
                            text=True, timeout=120)
    return one_line_error(result, "test.csv")


def strip_png(path: Path, width: int, height: int) -> Path:
    Image.new("L", (width, height), 128).save(path)
    return path


def huge_head_bundle(bench) -> Path:
    """A bundle whose zoo.json says vgg16 with 100,000 classes beside small_cnn's weights."""
    bundle = bench.copy(bench.bundle)
    path = bundle / "zoo.json"
    metadata = json.loads(path.read_text())
    metadata.update(arch="vgg16", num_classes=100_000, classes=[f"c{i}" for i in range(100_000)], library=None,
                    model_name=None, model_args=None)
    path.write_text(json.dumps(metadata), encoding="utf-8")
    return bundle


def cases(bench, result_type, one_line_error: Callable, zoo: Callable, run: Callable,
          config_file: Callable[[str], Path], damaged: Callable[..., Path],
          epochs_of: Callable[[Path], list[int]]) -> list[tuple[str, str, Callable[[], object]]]:
    """(group, case, check) for round two, in the issue's order of severity."""
    photo = str(next(bench.images.glob("*/*.jpg")))
    R = result_type
    return [
        ("escapes", "class and run folders named with ESC, BEL and a newline", lambda: escapes_in_a_run(bench, R)),
        ("escapes", "zoo serve of a bundle path with ESC", lambda: escape_in_served_path(bench, R)),
        ("escapes", "--vary value with YAML \\e", lambda: (lambda r: R("escape", "raw ESC") if not _escaped(
            r.stderr) else one_line_error(r, "memory_format"))(zoo(
            "compare", "--data", str(bench.images), "--archs", "small_cnn", "--out", str(bench.fresh("cmp")),
            "--vary", 'model.memory_format="\\e]0;pwned\\a"'))),
        ("memory bombs", f"zoo serve: {CONCURRENT} concurrent 81 MP PNGs", lambda: serve_concurrent_bombs(bench, R)),
        ("memory bombs", "zoo predict on a 1×1,000,000 PNG strip", lambda: _cli_peak(
            bench, R, "predict", strip_png(bench.fresh("strip.png"), 1, 1_000_000))),
        ("memory bombs", "zoo explain on a 1×1,000,000 PNG strip", lambda: _cli_peak(
            bench, R, "explain", strip_png(bench.fresh("strip.png"), 1, 1_000_000))),
        ("memory bombs", "zoo explain on an 81 MP 10 KB PNG", lambda: _cli_peak(
            bench, R, "explain", bomb_png(bench.fresh("bomb.png"), 9000, 9000))),
        ("memory bombs", "zoo explain on a 1×80,000 strip", lambda: _cli_peak(
            bench, R, "explain", strip_png(bench.fresh("strip.png"), 1, 80_000))),
        ("memory bombs", "zoo.json: vgg16 with 100,000 classes", lambda: one_line_error(
            zoo("predict", str(huge_head_bundle(bench)), photo), "do not fit")),
        ("orphans and hangs", "kill -9 of zoo serve --workers 2", lambda: killed_server_leaves_no_worker(bench, R)),
        ("orphans and hangs", "evaluate: test.csv is a FIFO",
         lambda: fifo_in_run(bench, R, one_line_error, "test.csv")),
        ("orphans and hangs", "evaluate: classes.json is a FIFO",
         lambda: fifo_in_run(bench, R, one_line_error, "classes.json")),
        ("resume and runs", "two --resume RUN at once", lambda: two_resumes_at_once(bench, R, epochs_of)),
        ("resume and runs", "--resume RUN --epochs fewer than trained", lambda: fewer_epochs(bench, R, zoo,
                                                                                             one_line_error)),
        ("resume and runs", "--strategy ddp_spawn", lambda: one_line_error(run("--strategy", "ddp_spawn"), "ddp")),
        ("resume and runs", "--devices -1", lambda: one_line_error(run("--devices", "-1"), "devices")),
        ("resume and runs", "--image-size 100000", lambda: one_line_error(run("--image-size", "100000"), "image_size")),
        ("resume and runs", "--resume RUN --config FILE", lambda: one_line_error(zoo(
            "finetune", "--resume", str(bench.copy(bench.base)), "--config",
            str(config_file("trainer:\n  epochs: 3\n"))), "--config")),
        ("wrong values", "zoo.json temperature 1e-300", lambda: one_line_error(
            zoo("predict", str(damaged(temperature=1e-300)), photo), "temperature")),
        ("wrong values", "zoo.json std 1e-300", lambda: one_line_error(
            zoo("predict", str(damaged(std=[1e-300, 0.5, 0.5])), photo), "std")),
        ("wrong values", "zoo.json mean 1e308", lambda: one_line_error(
            zoo("predict", str(damaged(mean=[1e308, 0.5, 0.5])), photo), "mean")),
        ("traceback", "--config binary", lambda: one_line_error(
            run("--config", str(_binary(bench.fresh("config.yaml")))), "config")),
        ("traceback", "--config nested 100,000 deep", lambda: one_line_error(
            run("--config", str(config_file("a: " + "[" * 100_000))), "deep")),
        ("traceback", "--config with a 5,000-digit integer", lambda: one_line_error(
            run("--config", str(config_file("trainer:\n  epochs: " + "9" * 5000 + "\n"))), "digits")),
        ("traceback", "--vary 'model.dropout=[0,0.5'", lambda: one_line_error(zoo(
            "compare", "--data", str(bench.images), "--archs", "small_cnn", "--out", str(bench.fresh("cmp")),
            "--vary", "model.dropout=[0,0.5"), "--vary")),
        ("traceback", "info timm/vit_tiny_patch16_224 --layers --image-size 100", lambda: one_line_error(
            zoo("info", "timm/vit_tiny_patch16_224", "--layers", "--image-size", "100"), "224")),
        ("traceback", "evaluate: a binary test.csv", lambda: binary_split_file(bench, R, one_line_error)),
        ("traceback", "POST /predict?top_k=%C2%B2, HEAD /health", lambda: http_edge_cases(bench, R)),
        ("traceback", "20 clients disconnect mid-upload", lambda: client_disconnects(bench, R)),
        ("minor", "YAML merge keys", lambda: one_line_error(run("--config", str(config_file(
            "trainer:\n  <<: {epochs: 0, seed: 1}\n  seed: 2\n"))), "trainer.epochs")),
        ("minor", "--config a FIFO", lambda: one_line_error(run("--config", str(_fifo(bench.fresh("c.yaml")))),
                                                            "regular file")),
        ("minor", "--config /dev/zero", lambda: one_line_error(run("--config", "/dev/zero"), "regular file")),
        ("minor", "zoo clean --image-size 0", lambda: one_line_error(zoo(
            "clean", str(bench.images), "--out", str(bench.fresh("clean")), "--image-size", "0"), "image_size")),
        ("minor", "zoo serve --workers 1000", lambda: one_line_error(zoo("serve", str(bench.bundle), "--workers",
                                                                         "1000"), "--workers")),
        ("minor", "--num-workers 1000", lambda: one_line_error(run("--num-workers", "1000"), "--num-workers")),
    ]


def _binary(path: Path) -> Path:
    path.write_bytes(bytes(range(256)) * 8)
    return path


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path
