"""``zoo weights ARCH`` and ``zoo weights add FILE...``: pretrained weights on a machine without internet."""

from __future__ import annotations

import argparse
from pathlib import Path

from zoo_cli.output import FORMATS, print_table, render

ADD = "add"
USAGE = """zoo weights ARCH [--tag TAG|all] [--format table|json|csv|markdown]
       zoo weights add FILE... [--arch ARCH [--tag TAG]] [--format table|json]"""
FIELDS = {
    "file": "file", "url": "URL", "sha256_prefix": "SHA-256 prefix", "size_mib": "size (MiB)", "folder": "folder",
    "installed": "installed", "repo": "Hugging Face repository", "package": "pip package", "how": "to install",
}
ADDED_COLUMNS = {"status": "status", "arch": "weights", "tag": "tag", "path": "path"}


def add_parsers(commands: argparse._SubParsersAction) -> None:
    weights = commands.add_parser(
        "weights", usage=USAGE, help="the weight files an entry needs, and installing files carried in by hand",
        description="zoo weights ARCH lists each file ARCH's pretrained weights need: name, URL, SHA-256 prefix, "
        "size and the folder it must go to. zoo weights add FILE... checks each file (the SHA-256 prefix in a "
        "torchvision name; a timm file's tensors against the model named with --arch) and installs them where "
        "zoo reads them offline; if any file is refused, none is installed.",
    )
    weights.add_argument("target", metavar="ARCH|add", help="an architecture (registry name or timm/<name>), or add")
    weights.add_argument("files", nargs="*", metavar="FILE", help="with add: the weight files to install")
    weights.add_argument("--tag", help="the weights' tag (default: the entry's default weights; listing: all for "
                         "every tag)")
    weights.add_argument("--arch", help="with add: the entry the files are for (needed for timm/<name> files)")
    weights.add_argument("--format", choices=FORMATS, default="table")
    weights.set_defaults(run=run_weights)


def run_weights(args: argparse.Namespace) -> int:
    from zoo.errors import ZooError

    if args.target == ADD:
        if args.format in ("csv", "markdown"):
            raise ZooError(f"zoo weights add prints a table or json, not {args.format}: use --format json")
        return _add([Path(file) for file in args.files], args.arch, args.tag, args.format)
    if args.files:
        raise ZooError(f"zoo weights {args.target} takes no files: to install them, zoo weights add "
                       f"{' '.join(args.files)}")
    if args.arch is not None:
        raise ZooError(f"--arch goes with zoo weights add; to list {args.arch}'s files: zoo weights {args.arch}")
    return _list(args.target, args.tag, args.format)


def _list(arch: str, tag: str | None, fmt: str) -> int:
    from zoo.weights.installing import weight_files

    files = [file.to_dict() for file in weight_files(arch, tag)]
    if fmt != "table":
        render(files, {key: key for key in ("arch", "tag", "default", "source", *FIELDS)}, fmt)
        return 0
    for file in files:
        rows = [{"key": header, "value": file[key]} for key, header in FIELDS.items() if file[key] is not None]
        title = f"{_weights_name(file)}{' (default)' if file['default'] else ''} — {file['source']}"
        print_table(rows, {"key": "field", "value": "value"}, title, wrap=("value",))
    return 0


def _add(files: list[Path], arch: str | None, tag: str | None, fmt: str) -> int:
    from zoo.weights.installing import add_files

    done = [item.to_dict() for item in add_files(files, arch, tag)]
    if fmt == "json":
        render(done, {}, "json")
        return 0
    for item in done:
        print(f"{item['status']}: {item['file']} as {_weights_name(item)} → {item['path']}")
    return 0


def _weights_name(item: dict) -> str:
    """``resnet50:IMAGENET1K_V2``; a timm model's weights by the name --arch takes, ``timm/convnext_tiny.fb_in22k``."""
    arch, tag = item["arch"], item["tag"]
    return f"{arch.partition('.')[0]}.{tag}" if arch.startswith("timm/") else f"{arch}:{tag}"
