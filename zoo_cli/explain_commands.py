"""``zoo explain`` and ``zoo clean``: looking inside a model, and at the data it learns from."""

from __future__ import annotations

import argparse
from pathlib import Path

from zoo_cli.model_commands import SOURCE_HELP
from zoo_cli.output import print_table

METHODS = "gradcam (default), gradcam++, scorecam (slow: a forward pass per channel) or eigencam (class-agnostic)"


def add_parsers(commands: argparse._SubParsersAction) -> None:
    explain = commands.add_parser("explain", help="what a model looks at: Grad-CAM heat maps, feature maps, filters")
    explain.add_argument("source", metavar="SOURCE",
                         help=f"a registry name (its pretrained weights and ImageNet's classes), or {SOURCE_HELP}")
    explain.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files or folders")
    explain.add_argument("--out", type=Path, metavar="DIR", required=True,
                         help="folder for the pictures and explain.json")
    explain.add_argument("--method", default="gradcam", metavar="METHOD", help=METHODS)
    explain.add_argument("--class", dest="class_name", metavar="NAME",
                         help="the class to explain (default: each image's top-1 prediction)")
    explain.add_argument("--layer", metavar="NAME",
                         help="the layer to look at (default: the last convolutional stage; every name: zoo info "
                              "ARCH --layers)")
    explain.add_argument("--top-k", type=int, default=5, help="predictions per image in explain.json")
    explain.set_defaults(run=run_explain)


def run_explain(args: argparse.Namespace) -> int:
    from finetune.explain import FILTERS_FILE, REPORT_FILE, explain

    result = explain(args.source, args.images, args.out, method=args.method, class_name=args.class_name,
                     layer=args.layer, top_k=args.top_k)
    rows = [{"path": str(item.path), "class": f"{item.predictions[0][0]} {item.predictions[0][1]:.3f}",
             "target": f"{item.target} {item.target_probability:.3f}", "stage": item.layer}
            for item in result.explanations]
    print_table(rows, {"path": "image", "class": "top-1 (probability)", "target": f"{result.method} of",
                       "stage": "layer"})
    once = ", ".join([FILTERS_FILE] * result.filters + [REPORT_FILE])
    print(f"written to {result.out_dir}: per image STEM.gradcam.png, STEM.gradcam.npy, STEM.feature_maps.png; {once}")
    return 0
