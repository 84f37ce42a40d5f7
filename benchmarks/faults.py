"""Faults, hostile files and bad values against the real ``zoo`` command, each in its own process.

    python -m benchmarks.faults [--write] [--only TEXT] [--round 1|2]

Kills are real signals (SIGKILL, SIGTERM, SIGINT), a full disk is a real write limit (RLIMIT_FSIZE with
SIGXFSZ ignored, so a write fails with EFBIG as on a full disk), and every case runs with a time limit, so a
hang shows as one. Round two (benchmarks/faults_round_two.py) adds escapes, memory bombs with their peak
memory, orphaned server workers, resume races and values that give NaN. Each case expects either a one-line
error (exit 2, one ``zoo CMD: error:`` line, no traceback) or that nothing is lost (the run or bundle is whole
afterwards and a resume finishes it).
Prints one row per case and the totals; ``--write`` records them in RESULTS.md; ``--only TEXT`` runs the
cases whose name holds TEXT.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks.common import photos_folder, table, write_results

TIMEOUT = 180  # seconds: a case that takes longer counts as a hang
RUN = ["--arch", "small_cnn", "--weights", "none", "--image-size", "32", "--batch-size", "8", "--augment", "none",
       "--num-workers", "0"]


@dataclass
class Result:
    # "one-line error", "nothing lost", "handled" (right output), "hang" (or an orphan), "traceback", "wrong";
    # round two: "escape" (ESC or BEL reached the terminal), "memory" (a peak over the bound)
    outcome: str
    detail: str


def zoo(*args: str, env: dict[str, str] | None = None, limit_bytes: int | None = None,
        stdin: int | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``zoo ARGS`` in a fresh interpreter; ``limit_bytes`` caps the size of any file it writes."""

    def cap() -> None:
        if limit_bytes is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.run([sys.executable, "-m", "zoo_cli.main", *args], capture_output=True, text=True,
                          timeout=TIMEOUT, env={**os.environ, **(env or {})}, preexec_fn=cap, stdin=stdin)


def one_line_error(result: subprocess.CompletedProcess[str], must_say: str = "") -> Result:
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("zoo ") and ": error: " in line]
    last = lines[-1] if lines else ""
    if "Traceback" in result.stderr:
        return Result("traceback", last[:120])
    if result.returncode == 2 and len(errors) == 1 and must_say.lower() in errors[0].lower():
        return Result("one-line error", errors[0][:160])
    return Result("wrong", f"exit {result.returncode}: {last[:140]}")


def _epochs(run: Path) -> list[int]:
    lines = (run / "metrics.csv").read_text(encoding="utf-8").splitlines()[1:]
    return [int(line.split(",")[0]) for line in lines]


def _finished(run: Path, epochs: int) -> bool:
    return (run / "summary.json").is_file() and _epochs(run) == list(range(1, epochs + 1))


class Bench:
    """The shared material: an image folder, a finished one-epoch run and its bundle, under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.images = photos_folder(root / "images", classes=3, per_class=10, size=(40, 40))
        self.base = root / "base"
        assert zoo("finetune", "--data", str(self.images), "--out", str(self.base), "--epochs", "1",
                   *RUN).returncode == 0
        self.bundle = root / "bundle"
        assert zoo("export", str(self.base), "--out", str(self.bundle)).returncode == 0
        self.count = 0

    def fresh(self, name: str) -> Path:
        self.count += 1
        return self.root / f"{self.count:02d}-{name}"

    def copy(self, what: Path) -> Path:
        return Path(shutil.copytree(what, self.fresh(what.name)))

    def start(self, *args: str) -> tuple[subprocess.Popen[str], Path]:
        out = self.fresh("run")
        command = [sys.executable, "-m", "zoo_cli.main", "finetune", "--data", str(self.images), "--out", str(out),
                   *RUN, *args]
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), out


def _wait_for(condition: Callable[[], bool], process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if process.poll() is not None or time.monotonic() > deadline:
            raise TimeoutError("the run ended or stalled before the fault could be injected")
        time.sleep(0.05)


def killed_mid_run(bench: Bench, sig: signal.Signals, after_rows: int) -> Result:
    process, out = bench.start("--epochs", "60", "--lr", "1e-9")  # a flat error: best.ckpt stays at epoch 1
    metrics = out / "metrics.csv"
    _wait_for(lambda: metrics.is_file() and len(metrics.read_text().splitlines()) > after_rows, process)
    process.send_signal(sig)
    _, err = process.communicate(timeout=TIMEOUT)
    if "Traceback" in err:
        return Result("traceback", err.strip().splitlines()[-1][:120])
    if sig != signal.SIGKILL and (process.returncode == 0 or "--resume" not in err):
        return Result("wrong", f"exit {process.returncode} without the resume command")
    target = _epochs(out)[-1] + 1 if metrics.is_file() else 2
    resumed = zoo("finetune", "--resume", str(out), "--epochs", str(target))
    if resumed.returncode == 0 and _finished(out, target):
        return Result("nothing lost", f"exit {process.returncode}; resume finished epochs 1-{target}, no row twice")
    return one_line_error(resumed) if resumed.returncode else Result("wrong", f"epochs {_epochs(out)}")


def killed_before_first_checkpoint(bench: Bench) -> Result:
    process, out = bench.start("--epochs", "2")
    _wait_for(lambda: (out / "classes.json").is_file(), process)
    process.kill()
    process.communicate(timeout=TIMEOUT)
    refused = zoo("finetune", "--data", str(bench.images), "--out", str(out), *RUN)
    resumed = zoo("finetune", "--resume", str(out))
    if refused.returncode == 2 and resumed.returncode == 0 and _finished(out, 2):
        return Result("nothing lost", "a new run is refused; --resume starts it again and finishes")
    return one_line_error(resumed)


def disk_full_while_checkpointing(bench: Bench) -> Result:
    run = bench.copy(bench.base)
    before = (run / "last.ckpt").read_bytes()
    full = zoo("finetune", "--resume", str(run), "--epochs", "3", limit_bytes=len(before) // 2)
    verdict = one_line_error(full, "File too large")
    if verdict.outcome != "one-line error":
        return verdict
    intact = (run / "last.ckpt").read_bytes() == before and not list(run.glob(".*.tmp-*"))
    resumed = zoo("finetune", "--resume", str(run), "--epochs", "3")
    if intact and resumed.returncode == 0 and _finished(run, 3):
        return Result("nothing lost", "one line; last.ckpt unchanged; resumed to epoch 3 after")
    return Result("wrong", "last.ckpt changed or the resume failed")


def disk_full_during_export(bench: Bench) -> Result:
    bundle = bench.copy(bench.bundle)
    before = {path.name: path.read_bytes() for path in bundle.iterdir()}
    weights = len(before["model.safetensors"])
    full = zoo("export", str(bench.base), "--out", str(bundle), "--force", "--format", "all", limit_bytes=weights // 2)
    verdict = one_line_error(full)
    after = {path.name: path.read_bytes() for path in bundle.iterdir()}
    if verdict.outcome == "one-line error" and after == before:
        return Result("nothing lost", "one line; the old bundle is byte for byte as it was")
    return verdict if verdict.outcome != "one-line error" else Result("wrong", "the old bundle changed")


def fifo_given_to_predict(bench: Bench) -> Result:
    folder = bench.fresh("fifo")
    folder.mkdir()
    os.mkfifo(folder / "stuck.png")
    result = zoo("predict", str(bench.bundle), str(folder / "stuck.png"))
    return one_line_error(result, "regular file")


def damaged_image_mid_run(bench: Bench) -> Result:
    images = Path(shutil.copytree(bench.images, bench.fresh("images")))
    out = bench.fresh("run")
    command = [sys.executable, "-m", "zoo_cli.main", "finetune", "--data", str(images), "--out", str(out), *RUN,
               "--epochs", "60", "--cache", "none"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: (out / "metrics.csv").is_file(), process)
    for path in images.glob("*/*.jpg"):  # every image, wherever the split put it
        path.write_bytes(path.read_bytes()[:300])
    out_text, err = process.communicate(timeout=TIMEOUT)
    return one_line_error(subprocess.CompletedProcess(command, process.returncode, out_text, err), "--resume")


def closed_pipe(_: Bench) -> Result:
    command = f"{shlex_join([sys.executable, '-m', 'zoo_cli.main', 'info', 'resnet18'])} | head -1"
    result = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True, timeout=TIMEOUT)
    if "Traceback" in result.stderr or result.stderr.strip():
        return Result("traceback", result.stderr.strip().splitlines()[-1][:120])
    return Result("handled", f"quiet exit {result.returncode} (128 + SIGPIPE, as cat or grep)")


def shlex_join(parts: list[str]) -> str:
    import shlex

    return " ".join(shlex.quote(part) for part in parts)


def _damaged_metadata(bench: Bench, **values: object) -> Path:
    bundle = bench.copy(bench.bundle)
    path = bundle / "zoo.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **values}), encoding="utf-8")
    return bundle


def _damaged_checkpoint(bench: Bench, damage: Callable[[Path], None]) -> Path:
    run = bench.copy(bench.base)
    damage(run / "last.ckpt")
    return run


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch '{self.marker}'",)


def malicious_checkpoint(bench: Bench) -> Result:
    marker = bench.fresh("pwned")
    run = _damaged_checkpoint(bench, lambda path: path.write_bytes(pickle.dumps({"state_dict": _Payload(marker)}, 2)))
    result = zoo("finetune", "--resume", str(run), env={"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"})
    if marker.exists():
        return Result("wrong", "the payload ran")
    return one_line_error(result, "never runs code")


def _relabel(path: Path, **metadata: object) -> None:
    content = torch.load(path, weights_only=True)
    content["zoo"].update(metadata)
    torch.save(content, path)


def long_class_names(bench: Bench) -> Result:
    images = bench.fresh("long-names")
    for index, folder in enumerate(sorted(bench.images.iterdir())):
        shutil.copytree(folder, images / (f"{index}-" + "very-long-class-name-" * 11))
    run = bench.fresh("run")
    trained = zoo("finetune", "--data", str(images), "--out", str(run), *RUN, "--epochs", "1")
    evaluated = zoo("evaluate", str(run), "--out", str(bench.fresh("eval")))
    if trained.returncode or evaluated.returncode or "Traceback" in evaluated.stderr:
        return one_line_error(evaluated)
    table_lines = [line for line in evaluated.stdout.splitlines() if "…" in line]
    return Result("handled" if table_lines else "wrong", "names cut with … in the table, numbers shown")


def cases(bench: Bench) -> list[tuple[str, str, Callable[[], Result]]]:
    """(group, case, check) for every fault."""
    run = lambda *args: zoo("finetune", "--data", str(bench.images), "--out", str(bench.fresh("run")), *RUN, *args)  # noqa: E731

    def config_file(text: str) -> Path:
        path = bench.fresh("config.yaml")
        path.write_text(text, encoding="utf-8")
        return path

    bomb = "out:\n" + "".join(
        f"  a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9) if i else ', '.join(['lol'] * 9)}]\n" for i in range(9))
    return [
        ("work lost", "kill -9 after epoch 2", lambda: killed_mid_run(bench, signal.SIGKILL, 2)),
        ("work lost", "SIGTERM mid-run", lambda: killed_mid_run(bench, signal.SIGTERM, 1)),
        ("work lost", "Ctrl-C (SIGINT) mid-run", lambda: killed_mid_run(bench, signal.SIGINT, 1)),
        ("work lost", "kill -9 before the first checkpoint", lambda: killed_before_first_checkpoint(bench)),
        ("work lost", "full disk while checkpointing", lambda: disk_full_while_checkpointing(bench)),
        ("work lost", "full disk during export --force", lambda: disk_full_during_export(bench)),
        ("wrong result or hang", "--lr nan", lambda: one_line_error(run("--lr", "nan"), "optim.lr")),
        ("wrong result or hang", "--devices 99 on the CPU",
         lambda: one_line_error(run("--devices", "99", "--accelerator", "cpu"), "cores")),
        ("wrong result or hang", "predict on a FIFO named .png", lambda: fifo_given_to_predict(bench)),
        ("wrong result or hang", "one image per class", lambda: one_line_error(
            zoo("finetune", "--data", str(photos_folder(bench.fresh("single"), 3, 1, (40, 40))), *RUN,
                "--out", str(bench.fresh("run"))), "no validation images")),
        ("wrong result or hang", "zoo.json: 2 names for 3 outputs", lambda: one_line_error(
            zoo("predict", str(_damaged_metadata(bench, classes=["a", "b"])), str(next(bench.images.glob("*/*.jpg")))),
            "classes")),
        ("wrong result or hang", 'zoo.json: "classes": "xyz"', lambda: one_line_error(
            zoo("predict", str(_damaged_metadata(bench, classes="xyz")), str(next(bench.images.glob("*/*.jpg")))),
            "classes")),
        ("wrong result or hang", "YAML bomb under out:",
         lambda: one_line_error(run("--config", str(config_file(bomb))), "out")),
        ("wrong result or hang", "a YAML key given twice",
         lambda: one_line_error(run("--config", str(config_file("trainer:\n  epochs: 1\n  epochs: 2\n"))), "twice")),
        ("wrong result or hang", "--resume RUN --data OTHER", lambda: one_line_error(
            zoo("finetune", "--resume", str(bench.copy(bench.base)), "--data", "digits"), "data.path")),
        ("wrong result or hang", "an image damaged mid-run, --cache none", lambda: damaged_image_mid_run(bench)),
        ("traceback", "truncated last.ckpt", lambda: one_line_error(zoo("finetune", "--resume", str(
            _damaged_checkpoint(bench, lambda p: p.write_bytes(p.read_bytes()[:999]))), "--epochs", "2"), "delete")),
        ("traceback", "empty last.ckpt", lambda: one_line_error(zoo("finetune", "--resume", str(
            _damaged_checkpoint(bench, lambda p: p.write_bytes(b""))), "--epochs", "2"), "delete")),
        ("traceback", "last.ckpt of another architecture", lambda: one_line_error(zoo("finetune", "--resume", str(
            _damaged_checkpoint(bench, lambda p: _relabel(p, arch="resnet18"))), "--epochs", "2"), "resnet18")),
        ("traceback", "malicious last.ckpt, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1", lambda: malicious_checkpoint(bench)),
        ("traceback", "--resume with another --arch", lambda: one_line_error(
            zoo("finetune", "--resume", str(bench.copy(bench.base)), "--arch", "resnet18"), "model.arch")),
        ("traceback", "--out is an existing file", lambda: one_line_error(zoo(
            "finetune", "--data", str(bench.images), *RUN, "--out", str(bench.images / "class0" / "0.jpg")), "--out")),
        ("traceback", "--out under a file", lambda: one_line_error(zoo(
            "finetune", "--data", str(bench.images), *RUN, "--out", str(bench.images / "class0" / "0.jpg" / "run")),
            "--out")),
        ("traceback", "evaluate --out an existing file", lambda: one_line_error(
            zoo("evaluate", str(bench.base), "--out", str(bench.base / "summary.json")), "--out")),
        ("traceback", "zoo.json std 0", lambda: one_line_error(
            zoo("predict", str(_damaged_metadata(bench, std=[0, 0, 0])), str(bench.images)), "std")),
        ("traceback", 'zoo.json image_size "28"', lambda: one_line_error(
            zoo("predict", str(_damaged_metadata(bench, image_size="28")), str(bench.images)), "image_size")),
        ("traceback", "zoo.json unknown interpolation", lambda: one_line_error(
            zoo("predict", str(_damaged_metadata(bench, interpolation="sharpest")), str(bench.images)),
            "interpolation")),
        ("traceback", "zoo.json dropout 5", lambda: one_line_error(
            zoo("predict", str(_damaged_metadata(bench, dropout=5)), str(bench.images)), "dropout")),
        ("traceback", "--weight-decay nan", lambda: one_line_error(run("--weight-decay", "nan"), "weight_decay")),
        ("traceback", "--seed -1", lambda: one_line_error(run("--seed", "-1"), "seed")),
        ("traceback", "--strategy bogus", lambda: one_line_error(run("--strategy", "bogus"), "strategy")),
        *([("traceback", "--accelerator gpu without a GPU",
            lambda: one_line_error(run("--accelerator", "gpu"), "no GPU"))] if not torch.cuda.is_available() else []),
        ("traceback", "corrupt summary.json to zoo report", lambda: one_line_error(zoo("report", str(
            _corrupt_summary(bench)), "--out", str(bench.fresh("report"))), "summary.json")),
        ("traceback", "zoo info resnet18 | head -1", lambda: closed_pipe(bench)),
        ("traceback", "--weights a pickled object", lambda: one_line_error(run(
            "--weights", str(_pickled_weights(bench))), "arbitrary code")),
        ("traceback", "230-character class names in evaluate", lambda: long_class_names(bench)),
    ]


def round_two(bench: Bench) -> list[tuple[str, str, Callable[[], Result]]]:
    """Round two's cases (benchmarks/faults_round_two.py), with round one's helpers."""
    from benchmarks import faults_round_two

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return zoo("finetune", "--data", str(bench.images), "--out", str(bench.fresh("run")), *RUN, *args)

    def config_file(text: str) -> Path:
        path = bench.fresh("config.yaml")
        path.write_text(text, encoding="utf-8")
        return path

    def epochs_of(run_dir: Path) -> list[int]:
        return _epochs(run_dir) if (run_dir / "metrics.csv").is_file() else []

    return faults_round_two.cases(bench, Result, one_line_error, zoo, run, config_file,
                                  lambda **values: _damaged_metadata(bench, **values), epochs_of)  # type: ignore[return-value]


def _corrupt_summary(bench: Bench) -> Path:
    run = bench.copy(bench.base)
    (run / "summary.json").write_text('{"arch": "small_cnn", "test_top1', encoding="utf-8")
    return run


def _pickled_weights(bench: Bench) -> Path:
    path = bench.fresh("weights.pth")
    torch.save({"conv.weight": _Payload(bench.fresh("pwned"))}, path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="record the table in benchmarks/RESULTS.md")
    parser.add_argument("--only", metavar="TEXT", help="run only the cases whose name holds TEXT")
    parser.add_argument("--round", choices=("1", "2"), help="run only round one's or round two's cases")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="zoo-faults-") as folder:
        bench = Bench(Path(folder))
        rounds = [("1", case) for case in cases(bench)] + [("2", case) for case in round_two(bench)]
        for round_number, (group, name, check) in rounds:
            if (args.only and args.only not in name) or (args.round and args.round != round_number):
                continue
            started = time.perf_counter()
            try:
                result = check()
            except subprocess.TimeoutExpired:
                result = Result("hang", f"no answer in {TIMEOUT} s")
            except TimeoutError as error:
                result = Result("wrong", str(error))
            rows.append({"round": round_number, "group": group, "case": name, "outcome": result.outcome,
                         "seconds": f"{time.perf_counter() - started:.1f}", "detail": result.detail.replace("|", "/")})
            print(f"{result.outcome:15} {name}: {result.detail}", flush=True)
    counts = {outcome: sum(row["outcome"] == outcome for row in rows) for outcome in
              ("one-line error", "nothing lost", "handled", "hang", "traceback", "wrong", "escape", "memory")}
    totals = (f"cases tried {len(rows)}: one-line errors {counts['one-line error']}, nothing lost "
              f"{counts['nothing lost']}, handled {counts['handled']}, hangs or orphans {counts['hang']}, tracebacks "
              f"{counts['traceback']}, wrong or lost {counts['wrong']}, escapes reaching the terminal "
              f"{counts['escape']}, memory over the bound {counts['memory']}; load average {_load()}")
    print("\n" + table(rows) + "\n\n" + totals)
    if args.write:  # --round 2 alone writes its own section, beside round one's
        name, title = (("faults_round_two", "faults, round two: escapes, memory bombs, orphans, resume races, NaN "
                        "values") if args.round == "2" else
                       ("faults", "faults: kills, a full disk, hostile files and bad values against the zoo command"))
        write_results(name, title, f"{totals}\n\n{table(rows)}")
    if counts["hang"] or counts["traceback"] or counts["wrong"] or counts["escape"] or counts["memory"]:
        sys.exit(1)


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path("/proc/loadavg").is_file() else "n/a"


if __name__ == "__main__":
    main()
