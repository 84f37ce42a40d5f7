"""``zoo evaluate``, ``zoo predict`` and ``zoo export``: a trained model (run folder, .ckpt or bundle) at work."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from finetune.names import EXPORT_FORMATS
from finetune.results.settings import EvaluateSettings
from finetune.shipping.settings import ExportSettings, PredictSettings
from zoo_cli.flags import add_settings_flags
from zoo_cli.output import print_table, printable, render

if TYPE_CHECKING:
    from finetune.shipping.predict import Prediction

SOURCE_HELP = "a run folder of zoo finetune, a .ckpt file, or a bundle folder of zoo export"
TABLE_NAME_LENGTH = 40  # characters of a class name in predict's table; JSON and CSV keep names whole


def add_parsers(commands: argparse._SubParsersAction) -> None:
    evaluate = commands.add_parser("evaluate",
                                   help="measure a trained model on labelled images: metrics, confusion matrix, report")
    evaluate.add_argument("source", type=Path, metavar="SOURCE", help=SOURCE_HELP)
    add_settings_flags(evaluate, EvaluateSettings)
    evaluate.set_defaults(run=run_evaluate)

    predict = commands.add_parser("predict", help="top-k classes of images, with softmax probabilities")
    predict.add_argument("source", type=Path, metavar="SOURCE",
                         help=f"a registry name (its pretrained weights and ImageNet's classes), or {SOURCE_HELP}")
    predict.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                         help="image files or folders (searched recursively)")
    add_settings_flags(predict, PredictSettings)
    predict.set_defaults(run=run_predict)

    export = commands.add_parser("export",
                                 help="bundle a trained model to run without Lightning: safetensors, TorchScript, ONNX")
    export.add_argument("source", type=Path, metavar="SOURCE", help=SOURCE_HELP)
    add_settings_flags(export, ExportSettings)
    export.set_defaults(run=run_export)


def _warn(command: str, message: str) -> None:
    print(f"zoo {command}: warning: {printable(message)}", file=sys.stderr)


def run_evaluate(args: argparse.Namespace) -> int:
    from finetune.results.evaluate import evaluate

    result = evaluate(args.source, data=args.data, split=args.split, out=args.out, batch_size=args.batch_size,
                      top_losses=args.top_losses, tta=args.tta)
    for warning in result.warnings:
        _warn("evaluate", warning)
    metrics = result.metrics
    low, high = metrics["top1_error_ci95"]
    rows = [
        {"key": "images", "value": metrics["num_images"]},
        {"key": "top-1 error (%), 95% interval", "value": f"{metrics['top1_error']:.2f} ({low:.2f}-{high:.2f})"},
        *([{"key": f"top-{metrics['k']} error (%)", "value": metrics["topk_error"]}] if metrics["k"] else []),
        {"key": "chance top-1 error (%)", "value": metrics["chance_top1_error"]},
        {"key": "learned (interval below chance)", "value": metrics["learned"]},
        {"key": "loss", "value": f"{metrics['loss']:.4f}"},
        {"key": "ECE (%), 15 bins", "value": f"{metrics['ece']:.2f} (a perfectly calibrated model scores "
                                             f"{metrics['ece_noise']:.2f} on as many)"
         if metrics["ece"] is not None else "not finite"},
    ]
    print_table(rows, {"key": "metric", "value": "value"}, title=f"evaluation on {metrics['data']}")
    columns = {"class": "class", "precision": "precision", "recall": "recall", "f1": "F1", "support": "support"}
    print_table(metrics["per_class"], columns, title="per class")
    print(f"written to {result.out_dir}: metrics.json, confusion_matrix.csv, confusion_matrix.png, calibration.png, "
          "top_losses.csv, top_losses.png, report.md")
    return 0


def _csv_rows(results: list[Prediction]) -> Iterator[dict[str, object]]:
    """One row per predicted class, or one row with the error of an unreadable image."""
    for result in results:
        if result.error:
            yield {"path": str(result.path), "rank": "", "class": "", "probability": "", "error": result.error}
        for rank, (name, probability) in enumerate(result.top, start=1):
            yield {"path": str(result.path), "rank": rank, "class": name, "probability": probability, "error": ""}


def run_predict(args: argparse.Namespace) -> int:
    from finetune.shipping.predict import predict
    from finetune.shipping.pretrained import load_model

    model = load_model(args.source).model
    if args.tta is not None:
        model.use_tta(args.tta)
    results = predict(model, args.paths, top_k=args.top_k, batch_size=args.batch_size)
    if args.format == "json":
        render([result.to_dict() for result in results], {}, "json")
    elif args.format == "csv":
        render(list(_csv_rows(results)), {}, "csv")
    else:
        from zoo.errors import shorten

        # Each name cut on its own, and the cell wrapped: cutting it would cut the probabilities after the names.
        rows = [
            {"path": str(result.path),
             "class": f"error: {result.error}" if result.error
             else ", ".join(f"{shorten(n, TABLE_NAME_LENGTH)} {p:.3f}" for n, p in result.top)}
            for result in results
        ]
        print_table(rows, {"path": "image", "class": "classes (probability)"}, wrap=("class",))
    failed = sum(1 for result in results if result.error)
    if failed:
        _warn("predict", f"{failed} of {len(results)} images could not be read")
    return 1 if failed else 0


def run_export(args: argparse.Namespace) -> int:
    from finetune.shipping.export import TOLERANCE, export

    formats = EXPORT_FORMATS if args.format == "all" else (args.format,)
    result = export(args.source, formats, args.out, force=args.force)
    rows = [{"kind": name, "value": f"{difference:.2e}"} for name, difference in result.differences.items()]
    print_table(rows, {"kind": "format or library", "value": "max |logit difference|"},
                title=f"verified exports (limit {TOLERANCE:g})")
    print(f"bundle: {result.out_dir} (load it with zoo.load, or pass it to zoo predict / zoo evaluate; "
          "README.md is its model card)")
    return 0
