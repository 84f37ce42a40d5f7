"""Freeze strategies as a Lightning ``BaseFinetuning`` callback: linear probe, or freeze then unfreeze."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BaseFinetuning
from torch.optim import Optimizer

from finetune.training.module import Classifier


class BackboneFreeze(BaseFinetuning):
    """Freeze everything but the head; unfreeze it at ``unfreeze_epoch`` (never when ``None``).

    The optimiser holds the backbone's parameter group from the start (at ``lr × backbone_lr_mult``), so
    unfreezing only turns gradients back on: the learning-rate schedule stays one curve. Frozen
    BatchNorm layers are kept in eval mode by ``Classifier.train``.
    """

    def __init__(self, unfreeze_epoch: int | None = None) -> None:
        super().__init__()
        self.unfreeze_epoch = unfreeze_epoch

    def freeze_before_training(self, pl_module: pl.LightningModule) -> None:
        assert isinstance(pl_module, Classifier)
        for param in pl_module.backbone_parameters():
            param.requires_grad = False
        pl_module.train(pl_module.training)

    def finetune_function(self, pl_module: pl.LightningModule, epoch: int, optimizer: Optimizer) -> None:
        assert isinstance(pl_module, Classifier)
        if self.unfreeze_epoch is None or epoch < self.unfreeze_epoch:
            return
        backbone = pl_module.backbone_parameters()
        if not any(p.requires_grad for p in backbone):
            for param in backbone:
                param.requires_grad = True
            pl_module.train()

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                                 optimizer: Optimizer) -> None:
        # DDP only averages gradients of parameters that were trainable when it wrapped the model, which
        # happens after freezing: the unfrozen backbone's gradients are averaged here instead.
        # One collective for all of them (ResNet-50 has 159 backbone tensors), as DDP's own buckets do.
        if trainer.world_size == 1 or not isinstance(pl_module, Classifier):
            return
        grads = [param.grad for param in pl_module.backbone_parameters() if param.grad is not None]
        if not grads:
            return
        flat = torch.cat([grad.reshape(-1) for grad in grads])
        torch.distributed.all_reduce(flat)
        flat /= trainer.world_size
        for grad, averaged in zip(grads, flat.split([grad.numel() for grad in grads]), strict=True):
            grad.copy_(averaged.view_as(grad))
