"""What a finished run hands over: the best checkpoint's epoch and figures (and what chose it), its held-out
measure, and ``summary.json``."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from finetune.results.heldout import measure_best
from finetune.results.plots import plot_learning_curves
from finetune.results.records import RunSummary
from finetune.runtime.console import say
from finetune.training.prepared import Prepared
from finetune.training.trainer import Watchers


def summarize(trainer: pl.Trainer, run: Prepared, watched: Watchers, started: float) -> RunSummary:
    """Measure the best checkpoint once on the test split and write ``summary.json``; its content."""
    config, split, setup, run_dir = run.config, run.split, run.setup, run.run_dir
    final = final_metrics(watched.metrics.rows, config.trainer.monitor)
    if split.test:
        say(f"measuring the best checkpoint (epoch {final['best_epoch']}) once on {len(split.test)} test images")
    measured = measure_best(trainer, setup.module, setup.data, split, run_dir, final, config.trainer.tta,
                            run.times)
    with run.times.phase("report"):
        if watched.metrics.rows:
            plot_learning_curves(watched.metrics.rows, run_dir / "learning_curves.png",
                                 f"{setup.spec.name} on {Path(config.data.path).name}",
                                 None if final["best_epoch"] is None else int(final["best_epoch"]))
    early_stop = watched.early_stop
    summary = RunSummary(**{
        "arch": setup.spec.name,
        "weights": setup.weights_origin,
        "num_classes": len(split.classes),
        "classes": split.classes,
        "num_train": len(split.train),
        "num_val": len(split.val),
        "num_test": len(split.test),
        "num_skipped": len(split.skipped),
        "image_size": setup.image_size,
        "epochs": trainer.current_epoch,
        "stopped_early_after_epoch": early_stop.stopped_at if early_stop is not None else None,
        "steps": trainer.global_step,
        "precision": setup.precision.value,
        "memory_format": "channels_last" if setup.module.memory_format == torch.channels_last else "contiguous",
        "selected_on": "val",
        **final,
        **measured,
        "train_seconds": round(watched.throughput.seconds, 3),
        # Start-up, scan, setup, precision probe, decoding, features, lr finding, training, calibration, held-out
        # measurement, report: apart from the summary's own writing, they add up to the wall time.
        "phase_seconds": run.times.rounded(),
        "wall_seconds": round(time.perf_counter() - started, 3),
        "train_images_per_second": round(watched.throughput.images_per_second, 2),
        "best_checkpoint": str(run_dir / "best.ckpt"),
        "last_checkpoint": str(run_dir / "last.ckpt"),
        "seed": config.trainer.seed,
        "config": config,
    })
    summary.write(run_dir)
    return summary


def not_learned_message(summary: RunSummary) -> str:
    """One line saying a run stayed at chance, with its figures and what to try."""
    split = summary.reported_on
    interval, error = summary.interval(split), summary.error(split)
    assert interval is not None
    assert error is not None
    low, high = interval
    hints = ["a lower --lr", "more --epochs"]
    if summary.weights == "none":
        hints.append("pretrained --weights default where the architecture has them")
    return (f"{summary.arch} did not learn: its {split} top-1 error {error:.1f}% "
            f"(95% CI {low:.1f}-{high:.1f}) does not lie below chance, {summary.chance_top1_error:.1f}% "
            f"(always the most frequent class); try {', '.join(hints)}")


def best_row(rows: Sequence[dict[str, float | None]], monitor: str = "val_error") -> dict[str, float | None]:
    """The row of metrics.csv whose checkpoint is best.ckpt: the lowest validation top-1 error, of equal ones the
    lowest validation loss (``val_error``), or the lowest validation loss (``val_loss``); the first of exact ties,
    as ``BestCheckpoint`` keeps the first. Empty when no epoch was validated."""
    def key(row: dict[str, float | None]) -> tuple[float, ...]:
        error, loss = row.get("val/top1_error"), row.get("val/loss")
        finite_loss = loss if loss is not None and not math.isnan(loss) else math.inf
        return (finite_loss,) if monitor == "val_loss" else (error if error is not None else math.inf, finite_loss)

    validated = [row for row in rows if row.get("val/top1_error") is not None]
    return min(validated, key=key, default={})


def final_metrics(rows: Sequence[dict[str, float | None]], monitor: str = "val_error") -> dict[str, Any]:
    """The validation figures of the best checkpoint's epoch (one row of metrics.csv), what chose it, and the
    last epoch's."""
    best = best_row(rows, monitor)
    last = rows[-1] if rows else {}
    tied = [row for row in rows if best and row.get("val/top1_error") == best.get("val/top1_error")]
    tied_losses = [loss for row in tied if (loss := row.get("val/loss")) is not None]
    return {
        "best_epoch": int(best["epoch"] or 0) if best else None,
        "val_top1_error": best.get("val/top1_error"),
        "val_topk_error": best.get("val/topk_error"),
        "val_loss": best.get("val/loss"),
        "final_val_top1_error": last.get("val/top1_error"),
        "final_val_topk_error": last.get("val/topk_error"),
        # What chose best.ckpt and on what figures; epochs_tied: those of the same validation error.
        "selection": {"monitor": monitor, "tie_break": "val_loss" if monitor == "val_error" else None,
                      "epoch": int(best["epoch"] or 0) if best else None, "val_top1_error": best.get("val/top1_error"),
                      "val_loss": best.get("val/loss"), "epochs_tied": len(tied),
                      "lowest_val_loss_of_tied": min(tied_losses, default=None)},
    }
