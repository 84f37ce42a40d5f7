"""The LightningDataModule over a saved split: seeded shuffling, transforms from the registry entry."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from finetune.config import DataConfig
from finetune.data.images import ImageDataset
from finetune.data.split import Split
from finetune.data.transforms import eval_transform, train_transform
from finetune.hardware import choose_num_workers
from zoo.spec import ArchSpec


class ImageDataModule(pl.LightningDataModule):
    """Train / val / test loaders of ``split`` at ``image_size`` for the entry ``spec``."""

    def __init__(self, split: Split, spec: ArchSpec, image_size: int, config: DataConfig) -> None:
        super().__init__()
        self.split = split
        self.config = config
        self.train_set = ImageDataset(split.train, train_transform(spec, image_size, config.augment))
        self.val_set = ImageDataset(split.val, eval_transform(spec, image_size))
        self.test_set = ImageDataset(split.test, eval_transform(spec, image_size))
        self.num_workers = choose_num_workers(config.num_workers, len(split.train))

    def _loader(self, dataset: ImageDataset, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.config.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=self.num_workers > 0,
            drop_last=shuffle and len(dataset) > self.config.batch_size,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)
