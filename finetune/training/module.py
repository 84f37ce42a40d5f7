"""The LightningModule: given a ready network, trains it as a classifier and measures top-1 / top-k error."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.types import OptimizerLRSchedulerConfig
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torchmetrics import CatMetric, MeanMetric, SumMetric
from torchmetrics.classification import MulticlassAccuracy

from finetune.config import OptimConfig
from finetune.results.calibration import fit_temperature
from finetune.results.stats import top_k
from finetune.training.plateau import lr_factor
from zoo.bundle import ModelMetadata


def _decays(name: str, param: nn.Parameter) -> bool:
    """Weights of more than one dimension decay; biases and normalisation parameters do not."""
    return param.ndim > 1 and not name.endswith(".bias")


def standard_error(mean: Tensor, mean_of_squares: Tensor, count: Tensor) -> Tensor:
    """The standard error of a mean of ``count`` values from their mean and mean square (sample variance)."""
    variance = (mean_of_squares - mean.square()).clamp(min=0) * count / (count - 1).clamp(min=1)
    return (variance / count.clamp(min=1)).sqrt()


def calibrated_loss(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """The NLL of ``logits`` at the temperature that minimises it, and its standard error over the images.

    Without augmentation, or once every validation image is right, a network keeps sharpening its softmax and
    the plain loss keeps falling with nothing learned; at its best temperature that gain is gone, and what is
    left falls only while the network ranks the classes better.
    """
    per_image = nn.functional.cross_entropy(logits / fit_temperature(logits, labels), labels, reduction="none")
    count = torch.tensor(float(len(per_image)))
    return per_image.mean(), standard_error(per_image.mean(), per_image.square().mean(), count)


class Classifier(pl.LightningModule):
    """Cross-entropy fine-tuning of ``network`` whose classifier sits at the dotted path ``heads`` (or classifiers
    at each of them: distilled DeiT's ``head`` and ``head_dist``).

    ``metadata`` (architecture, classes, input settings) is stored in every checkpoint under ``"zoo"``
    so a checkpoint alone can rebuild the model.
    """

    def __init__(
        self,
        network: nn.Module,
        heads: str | Sequence[str],
        num_classes: int,
        optim: OptimConfig,
        class_weights: list[float] | None = None,
        metadata: ModelMetadata | None = None,
        memory_format: torch.memory_format = torch.contiguous_format,
    ) -> None:
        super().__init__()
        self.heads = (heads,) if isinstance(heads, str) else tuple(heads)
        self.save_hyperparameters({"heads": list(self.heads), "num_classes": num_classes,
                                   "optim": dataclasses.asdict(optim)})
        self.network = network
        self.optim = optim
        self.metadata = metadata
        self.memory_format = memory_format
        self.decay: tuple[int, int] | None = None  # the plateau schedule's anneal: first step, steps (PlateauStop)
        self.top_k = top_k(num_classes)
        # The learning-rate schedule: warm-up then cosine from restart_step to schedule_total (global steps); a
        # resume that extends a finished run restarts it at its last step (finetune.training.run).
        self.restart_step = 0
        self.schedule_total: int | None = None
        weight = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        self.loss = nn.CrossEntropyLoss(weight=weight, label_smoothing=optim.label_smoothing)
        # Per-epoch figures accumulate in metrics (synchronised across processes when computed) and are
        # logged once per epoch; a per-step self.log cost ~0.5 ms of a 2.8 ms validation step of a linear
        # probe's head. The inputs are zoo's own logits and labels: torchmetrics' argument checks are skipped.
        self.train_loss = MeanMetric()
        self.val_loss = MeanMetric()
        # The per-image losses' first two moments and count give the validation loss's standard error, the
        # noise the plateau rule (finetune.training.plateau) looks past.
        self.val_image_loss, self.val_image_loss_sq, self.val_count = MeanMetric(), MeanMetric(), SumMetric()
        # The plateau schedule judges the validation loss at its best temperature (calibrated_loss): it needs every
        # validation logit of the epoch (kept in bf16: N × classes × 2 bytes).
        self.val_logits = CatMetric() if optim.schedule == "plateau" else None
        self.val_labels = CatMetric() if optim.schedule == "plateau" else None
        self.val_top1 = MulticlassAccuracy(num_classes, top_k=1, average="micro", validate_args=False)
        self.val_topk = (MulticlassAccuracy(num_classes, top_k=self.top_k, average="micro", validate_args=False)
                         if self.top_k else None)

    def forward(self, images: Tensor) -> Tensor:
        return self.network(images.contiguous(memory_format=self.memory_format))

    def head_parameters(self) -> list[nn.Parameter]:
        return [p for head in self.heads for p in self.network.get_submodule(head).parameters()]

    def backbone_parameters(self) -> list[nn.Parameter]:
        head = {id(p) for p in self.head_parameters()}
        return [p for p in self.network.parameters() if id(p) not in head]

    def train(self, mode: bool = True) -> Classifier:
        """Keep frozen BatchNorm layers in eval mode so their running statistics never drift; with ``bn_stats``
        frozen, every BatchNorm layer of the backbone."""
        super().train(mode)
        if mode:
            head = {id(module) for name in self.heads for module in self.network.get_submodule(name).modules()}
            for module in self.network.modules():
                if not isinstance(module, _BatchNorm) or id(module) in head:
                    continue
                params = list(module.parameters(recurse=False))
                if self.optim.bn_stats == "frozen" or (params and not any(p.requires_grad for p in params)):
                    module.eval()
        return self

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, labels = batch
        loss = self.loss(self(images), labels)
        self.train_loss.update(loss.detach(), len(labels))
        return loss  # the progress bar shows it (see finetune.training.callbacks.ProgressBar)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        images, labels = batch
        logits = self(images)
        self.val_loss.update(self.loss(logits, labels), len(labels))
        per_image = nn.functional.cross_entropy(logits.float(), labels, reduction="none",
                                                label_smoothing=self.optim.label_smoothing)
        self.val_image_loss.update(per_image)
        self.val_image_loss_sq.update(per_image.square())
        self.val_count.update(len(labels))
        self.val_top1.update(logits, labels)
        if self.val_topk is not None:
            self.val_topk.update(logits, labels)
        if self.val_logits is not None and self.val_labels is not None:
            self.val_logits.update(logits.detach().to(torch.bfloat16))
            self.val_labels.update(labels)

    def on_validation_epoch_end(self) -> None:
        # Every per-epoch figure is logged here, so callbacks read one consistent set at on_validation_end.
        if self.train_loss.update_called:
            self.log("train/loss", self.train_loss.compute())
            self.train_loss.reset()
        self.log("val/loss", self.val_loss.compute())
        self.log("val/loss_se", standard_error(self.val_image_loss.compute(), self.val_image_loss_sq.compute(),
                                               self.val_count.compute()))
        self.log("val/top1_error", 100.0 * (1.0 - self.val_top1.compute()), prog_bar=True)
        if self.val_topk is not None:
            self.log("val/topk_error", 100.0 * (1.0 - self.val_topk.compute()))
            self.val_topk.reset()
        if self.val_logits is not None and self.val_labels is not None and self.val_logits.update_called:
            self._log_calibrated_loss(self.val_logits.compute().float(), self.val_labels.compute().long())
            self.val_logits.reset()
            self.val_labels.reset()
        for metric in (self.val_loss, self.val_top1, self.val_image_loss, self.val_image_loss_sq, self.val_count):
            metric.reset()

    def _log_calibrated_loss(self, logits: Tensor, labels: Tensor) -> None:
        loss, error = calibrated_loss(logits, labels)
        self.log("val/calibrated_loss", loss)
        self.log("val/calibrated_loss_se", error)

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Head and backbone at their own rates, each split into weights that decay and those that do not.

        Biases and normalisation scales and shifts (every parameter of one dimension) get no weight decay:
        shrinking them toward zero only limits what a layer can express (timm's ``param_groups_weight_decay``
        rule). Empty groups are left out.
        """
        optim = self.optim
        if not isinstance(optim.lr, float) or optim.backbone_lr_mult is None:
            raise ValueError("the learning rates are not decided yet: pass the config through finetune.training.run's "
                             "choose_settings (or set optim.lr and optim.backbone_lr_mult)")
        head = {id(p) for p in self.head_parameters()}
        groups = []
        for in_head, lr in ((True, optim.lr), (False, optim.lr * optim.backbone_lr_mult)):
            named = [(name, p) for name, p in self.network.named_parameters() if (id(p) in head) == in_head]
            decay = [p for name, p in named if _decays(name, p)]
            plain = [p for name, p in named if not _decays(name, p)]
            groups += [{"params": params, "lr": lr, "weight_decay": weight_decay}
                       for params, weight_decay in ((decay, self.optim.weight_decay), (plain, 0.0)) if params]
        return groups

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        optim = self.optim
        groups = self.parameter_groups()  # refuses learning rates not decided yet
        # Fused: one kernel updates every tensor; on CPU that made AdamW 4-7× faster than torch's default
        # per-tensor loop (benchmarks/train_throughput.py), the same arithmetic. Only CPUs and CUDA have it.
        fused = self.device.type in ("cpu", "cuda")
        optimizer: torch.optim.Optimizer
        if optim.optimizer == "sgd":
            optimizer = torch.optim.SGD(groups, momentum=optim.momentum, nesterov=True, fused=fused)
        else:
            optimizer = torch.optim.AdamW(groups, fused=fused)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        self.schedule_total, start = total, self.restart_step

        def warmup_cosine(step: int) -> float:
            # Steps before a warm restart follow the schedule they had, which ended at the restart.
            begin, end = (start, total) if step >= start else (0, start)
            span, step = max(1, end - begin), step - begin
            warmup = int(span * optim.warmup_fraction)
            if step < warmup:
                return (step + 1) / (warmup + 1)
            if optim.schedule == "plateau" and start == 0:  # a warm restart anneals by cosine over its epochs
                return lr_factor(step, warmup, total, self.decay)
            progress = (step - warmup) / max(1, span - warmup)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["zoo"] = self.metadata.to_dict() if self.metadata is not None else {}
        checkpoint["schedule"] = {"start": self.restart_step, "total": self.schedule_total}


class FeatureProbe(Classifier):
    """A ``Classifier`` fed with backbone features: only its head runs, the network stays whole."""

    @property
    def head(self) -> str:
        """The one head a probe runs: a network with several has no single input to cache (``uses_feature_cache``)."""
        (head,) = self.heads
        return head

    def forward(self, features: Tensor) -> Tensor:
        # A 1×1-convolution head (BiT) gives N×classes×1×1, which the network flattens after it.
        return self.network.get_submodule(self.head)(features).flatten(1)
