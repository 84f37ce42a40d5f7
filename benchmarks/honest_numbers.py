"""Honest numbers on digits: dropout vs none over seeds (test error, interval, McNemar), and calibration.

    python -m benchmarks.honest_numbers [--epochs 15] [--seeds 0 1 2] [--resnet-epochs 5]

1. ``zoo compare --vary model.dropout=0,0.5 --seeds ...`` of small_cnn on digits with the shipped
   recipe (``configs/small_cnn-digits.yaml``): each row's test error (mean ± sd over seeds, per seed,
   95% Wilson interval of the mean), its McNemar p-value against the best row, and the report's findings.
2. Calibration of two models, small_cnn (the runs above) and resnet18 from scratch at 32 px: the
   temperature fitted on validation, and the ECE (15 bins) before and after it on the validation images
   that fitted it and on the held-out test images, which did not.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import silenced, table, write_results
from finetune.compare import Plan, compare
from finetune.compare.findings import findings
from finetune.compare.results import summarize
from finetune.config import load_config, merge, to_dict
from finetune.data.split import load_split
from finetune.results.calibration import calibration_error
from finetune.results.evaluate import model_logits
from finetune.results.records import RunSummary
from finetune.shipping.sources import load_source

CONFIG = Path(__file__).parents[1] / "configs" / "small_cnn-digits.yaml"


def _calibration(run_dir: Path) -> dict[str, float]:
    """Temperature and ECE before/after on validation (from the run) and on the test split (measured here)."""
    summary = RunSummary.read(run_dir)
    model = load_source(run_dir, device="cpu").model
    logits, labels = model_logits(model, load_split(run_dir).test, batch_size=256)
    return {
        "temperature": summary.temperature,
        "val_before": summary.val_ece_before, "val_after": summary.val_ece_after,
        "test_before": calibration_error(logits.softmax(dim=1), labels),
        "test_after": calibration_error((logits / model.temperature).softmax(dim=1), labels),
        "test_error": summary.test_top1_error,
    }


def _calibration_row(name: str, runs: list[dict[str, float]]) -> dict[str, Any]:
    def mean(key: str) -> str:
        values = [run[key] for run in runs]
        return f"{statistics.mean(values):.2f}" + (f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else "")

    return {"model": name, "runs": len(runs), "test error %": mean("test_error"), "temperature": mean("temperature"),
            "val ECE % before": mean("val_before"), "val ECE % after": mean("val_after"),
            "test ECE % before": mean("test_before"), "test ECE % after": mean("test_after")}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--resnet-epochs", type=int, default=5)
    args = parser.parse_args(argv)
    base = merge(load_config(CONFIG), {"trainer": {"epochs": args.epochs, "accelerator": "cpu"}})
    with tempfile.TemporaryDirectory(prefix="zoo-bench-") as workdir:
        out = Path(workdir) / "dropout"
        with silenced():
            per_seed = compare(Plan(["small_cnn"], args.seeds, {"model.dropout": [0.0, 0.5]}), base, out)
        rows = summarize(per_seed)
        configs = [to_dict(RunSummary.read(Path(row["run_dir"])).config) for row in per_seed]
        sentences = findings(rows, per_seed, configs)
        dropout_rows = [{
            "setting": row["setting"],
            "test top-1 error % (mean ± sd)": f"{row['test_top1_error']:.2f} ± {row['test_top1_error_std']:.2f}",
            "per seed": ", ".join(f"{seed['test_top1_error']:.2f}" for seed in per_seed
                                  if seed["setting"] == row["setting"]),
            "95% CI of the mean": "{:.2f}–{:.2f}".format(*row["test_top1_error_ci95"]),
            "val error % (mean)": f"{row['val_top1_error']:.2f}",
            "p vs best (largest per seed)": "–" if row["p_vs_best"] is None else f"{row['p_vs_best']:.3g}",
            "train s (mean)": f"{row['train_seconds']:.0f}",
        } for row in rows]
        small = [_calibration(Path(row["run_dir"])) for row in per_seed]
        resnet_config = dataclasses.replace(
            merge(base, {"model": {"arch": "resnet18", "dropout": 0.2}, "data": {"image_size": 32},
                         "trainer": {"epochs": args.resnet_epochs, "seed": args.seeds[0]}}),
            out=str(Path(workdir) / "resnet18"))
        from finetune.training.run import train

        with silenced():
            resnet_dir = train(resnet_config).run_dir
        resnet = [_calibration(resnet_dir)]
    num_test = rows[0]["num_test"]
    calibration_rows = [_calibration_row(f"small_cnn @ 28 px, {args.epochs} epochs (all {len(small)} runs above)",
                                         small),
                        _calibration_row(f"resnet18 @ 32 px from scratch, {args.resnet_epochs} epochs, dropout 0.2",
                                         resnet)]
    body = (f"small_cnn on digits with `configs/small_cnn-digits.yaml` ({args.epochs} epochs, lr 0.002, no "
            f"augmentation), `--vary model.dropout=0,0.5 --seeds {','.join(map(str, args.seeds))}`, one shared split: "
            f"{num_test} test images held out from the start.\n\n{table(dropout_rows)}\n\nFindings of the report:\n\n"
            + "\n".join(f"- {sentence}" for sentence in sentences)
            + f"\n\nCalibration: the temperature is fitted on the validation logits of each best checkpoint; ECE with "
            f"15 bins, in %. The validation figures are on the images that fitted it; the test figures are not.\n\n"
            f"{table(calibration_rows)}")
    print("\n" + body)
    write_results("honest_numbers", "honest_numbers: dropout vs none on digits over seeds, and calibration", body)


if __name__ == "__main__":
    main()
