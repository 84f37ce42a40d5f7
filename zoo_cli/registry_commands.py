"""``zoo list`` and ``zoo info``: the registry as tables and JSON."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from zoo_cli.output import FORMATS, print_table, render, table_width

if TYPE_CHECKING:
    from zoo.spec import ArchSpec

LIST_COLUMNS = {
    "name": "name", "family": "family", "depth": "depth", "params_m": "params (M)", "gflops": "GFLOPs",
    "ilsvrc": "ILSVRC", "ilsvrc_errors": "top-5 err %", "ilsvrc_single": "this net %",
    "imagenet_top1_error": "weights top-1 %", "imagenet_top5_error": "top-5 %", "weights_cached": "cached",
}
# Below WIDE_LIST columns (all eleven need about 160) the table keeps the columns that compare networks, each figure
# whole (--format csv/json and zoo info keep the rest).
WIDE_LIST = 160
NARROW_LIST_COLUMNS = {"name": "name", "depth": "depth", "params_m": "params (M)", "gflops": "GFLOPs",
                       "ilsvrc": "ILSVRC", "ilsvrc_errors": "top-5 %", "imagenet_top1_error": "weights top-1 %"}
LIST_NOTE = ("ILSVRC: the family's place and competition figure (test set; ×N: an ensemble of N networks); this "
             "net: that network alone, where the paper gives it; weights: the single-crop ImageNet error of the "
             "default weights, the network you load; *: another figure of that year, in zoo info NAME")


def add_parsers(commands: argparse._SubParsersAction) -> None:
    listing = commands.add_parser("list", help="table of the registry: depth, size, cost, error rates")
    listing.add_argument("pattern", nargs="?", help="shell-style name pattern, e.g. 'resnet*'")
    listing.add_argument("--sort", metavar="COLUMN",
                         help="sort by a JSON key, e.g. depth, params, gflops, imagenet_top1_error")
    listing.add_argument("--format", choices=FORMATS, default="table")
    listing.add_argument("--timm", metavar="PATTERN",
                         help="list timm models matching PATTERN with their pretrained tags")
    listing.set_defaults(run=run_list)

    info = commands.add_parser("info", help="everything known about one architecture")
    info.add_argument("name", help="registry name or timm/<name>")
    info.add_argument("--format", choices=("table", "json", "csv"), default="table", help="csv: with --layers only")
    info.add_argument("--layers", action="store_true",
                      help="one row per layer: kernel, stride, padding, output shape, receptive field, params, FLOPs")
    info.add_argument("--image-size", type=int, metavar="PX",
                      help="input size for --layers (default: the architecture's)")
    info.set_defaults(run=run_info)


def run_list(args: argparse.Namespace) -> int:
    if args.timm:
        return _list_timm(args.timm, args.format)
    import zoo

    names = zoo.list_models(args.pattern)
    if not names:
        raise zoo.ZooError(f"no architecture matches '{args.pattern}': see `zoo list` for every name")
    rows = [zoo.summarize(zoo.get_spec(name)) for name in names]
    if args.sort:
        if rows and args.sort not in rows[0]:
            raise zoo.ZooError(f"cannot sort by '{args.sort}': choose one of {', '.join(rows[0])}")
        rows.sort(key=lambda row: (row[args.sort] is None, row[args.sort]))
    if args.format != "table":
        render(rows, LIST_COLUMNS, args.format)
        return 0
    wide = table_width() >= WIDE_LIST
    for row in rows:
        row["params_m"] = row["params"] / 1e6
        results = zoo.get_spec(row["name"]).ilsvrc  # AlexNet has two: ILSVRC data only, and the winning entry
        if results:
            row["ilsvrc"] = f"{results[0].year} {results[0].standing}"
            figures = [f"{result.top5_error:g}" + (f" ×{result.models}" if result.models > 1 else "")
                       for result in results]
            row["ilsvrc_errors"] = figures[0] + ("*" if len(figures) > 1 else "")
            single = row["ilsvrc_single_model_top5_error"]
            row["ilsvrc_single"] = f"{single:g} ({results[0].single_model_split})" if single is not None else None
    print_table(rows, LIST_COLUMNS if wide else NARROW_LIST_COLUMNS, fold=("name",), wrap=("ilsvrc",),
                whole=("name",), compact=not wide,
                title="zoo registry (GFLOPs = 2 × multiply-accumulates per image at the default size)" if wide
                else "zoo registry (GFLOPs = 2 × MACs per image at the default size)")
    print(LIST_NOTE)
    if not wide:
        print(f"narrow terminal: below {WIDE_LIST} columns family, this net, top-5 and cached are left out "
              "(zoo info NAME, --format csv or json show them)")
    return 0


def _list_timm(pattern: str, fmt: str) -> int:
    import timm

    tags: dict[str, list[str]] = {name: [] for name in timm.list_models(pattern)}
    for full_name in timm.list_pretrained(pattern if "." in pattern else f"{pattern}.*"):
        name, _, tag = full_name.partition(".")
        tags.setdefault(name, []).append(tag)
    rows = [{"name": f"timm/{name}", "pretrained_tags": tags[name]} for name in sorted(tags)]
    if fmt == "table":
        rows = [{**row, "pretrained_tags": ", ".join(row["pretrained_tags"]) or "–"} for row in rows]
    render(rows, {"name": "name", "pretrained_tags": "pretrained tags"}, fmt)
    return 0


def run_info(args: argparse.Namespace) -> int:
    import zoo

    if args.layers:
        return _layers(zoo.get_spec(args.name), args.image_size, args.format)
    if args.format == "csv" or args.image_size is not None:
        flag = "--format csv" if args.format == "csv" else "--image-size"
        raise zoo.ZooError(f"{flag} applies to the layer table: add --layers")
    details = zoo.describe(zoo.get_spec(args.name))
    if args.format == "json":
        print(json.dumps(details, indent=2, ensure_ascii=False))
        return 0
    scalars = {k: v for k, v in details.items() if not isinstance(v, (list, dict))}
    print_table([{"key": k, "value": v} for k, v in scalars.items()], {"key": "field", "value": "value"},
                details["name"])
    prep = details["preprocessing"]
    source = f"the {prep['weights']} weights'" if prep["weights"] else "the entry's own"
    print(f"preprocessing ({source}): resize the shorter side to {prep['resize']} px ({prep['interpolation']}), "
          f"centre crop {prep['crop']}, mean {prep['mean']}, std {prep['std']}")
    for result in zoo.get_spec(args.name).ilsvrc:
        single = (f"; one network: {result.single_model_top5_error}% ({result.single_model}, "
                  f"{result.single_model_split})" if result.single_model_top5_error is not None else "")
        print(f"ILSVRC {result.year}, {result.standing}: top-5 error {result.top5_error}%"
              f"{f' (ensemble of {result.models})' if result.models > 1 else ''}{single} — {result.description} "
              f"[{result.source}]")
    if details["weights"]:
        print_table(details["weights"], {"tag": "weights", "imagenet_top1_error": "top-1 err %",
                                         "imagenet_top5_error": "top-5 err %", "resize": "resize", "crop": "crop",
                                         "cached": "cached", "path": "path"})
    stages = [{**s, "output_shape": "×".join(map(str, s["output_shape"]))} for s in details["stages"]]
    print_table(stages, {"name": "stage", "kind": "kind", "output_shape": "output shape", "params": "params"},
                f"stages at {details['input_size']} px")
    return 0


# The table's columns: kernel, stride, padding, dilation and groups share one (the JSON and CSV keep each apart), so
# whole layer names and every figure fit 120 columns; at 80 the names fold onto a second line.
LAYER_COLUMNS = {
    "name": "layer", "kind": "kind", "operation": "kernel", "output_shape": "C×H×W",
    "receptive_field": "RF px", "params": "params", "mflops": "MFLOPs",
}


def _two(values: list | None) -> str | None:
    """[h, w] as "h" when equal, else "h×w"; a padding that differs per side as "before+after"."""
    if values is None:
        return None
    texts = ["+".join(map(str, value)) if isinstance(value, list) else str(value) for value in values]
    return texts[0] if len(set(texts)) == 1 else "×".join(texts)


def _operation(row: dict) -> str | None:
    """Kernel, then stride (s), padding (p), dilation (d) and groups (g) where they differ from 1, 0, 1, 1."""
    if not row["kernel"]:
        return None
    parts = ["×".join(map(str, row["kernel"]))]
    defaults = (("s", "stride", "1"), ("p", "padding", "0"), ("d", "dilation", "1"), ("g", "groups", "1"))
    for letter, key, plain in defaults:
        value = _two(row[key]) if key != "groups" else (str(row[key]) if row[key] is not None else None)
        if value is not None and value != plain:
            parts.append(f"{letter}{value}")
    return " ".join(parts)


def _layers(spec: ArchSpec, image_size: int | None, fmt: str) -> int:
    from zoo.layers import layer_table

    table = layer_table(spec, image_size)
    if fmt == "json":
        render([row.to_dict() for row in table.rows], {}, "json")
        return 0
    notes: dict[str, list[str]] = {}
    rows = []
    for layer in table.rows:
        row = layer.to_dict()
        if layer.note is not None:
            notes.setdefault(layer.note, []).append(layer.name)
        marker = f"*{list(notes).index(layer.note) + 1}" if layer.note is not None else None
        kernel = row["kernel"]
        rows.append({
            **row, "kernel": "×".join(map(str, kernel)) if kernel else None, "stride": _two(row["stride"]),
            "padding": _two(row["padding"]), "dilation": _two(row["dilation"]), "operation": _operation(row),
            "output_shape": "×".join(map(str, row["output_shape"])),
            "receptive_field": _two(row["receptive_field"]) or marker, "kind": layer.type, "mflops": layer.flops / 1e6,
        })
    if fmt == "csv":  # the JSON's columns, 2-D values written as in the table
        keys = list(table.rows[0].to_dict()) if table.rows else []
        render([{key: row[key] for key in keys} for row in rows], {}, "csv")
        return 0
    print_table(rows, LAYER_COLUMNS, fold=("name", "kind"), compact=True,
                title=f"{spec.name} at {table.image_size} px: receptive fields (RF) as in Araujo et al. 2019, on the "
                "padded plane (they can exceed the image); kernel, with stride s, padding p, dilation d, groups g "
                "where not 1, 0, 1, 1")
    for number, (reason, names) in enumerate(notes.items(), start=1):
        print(f"*{number} receptive field not computed for {len(names)} layers from {names[0]} on: {reason}")
    if table.flops_outside_layers:
        print(f"{table.flops_outside_layers / 1e6:.2f} MFLOPs ran outside any layer (functional code): in no row")
    return 0
