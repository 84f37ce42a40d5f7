"""The LightningDataModule over a saved split: seeded shuffling, transforms of the run's preprocessing, image cache."""

from __future__ import annotations

from collections.abc import Callable, Sized
from typing import Any, cast

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate
from torchvision.transforms import InterpolationMode

from finetune.config import ConfigError, DataConfig
from finetune.data.decoded import CropBatch, DecodedImages, Squares, decoded_bytes, decoded_pixels
from finetune.data.images import ImageDataset
from finetune.data.shards import ShardSplit, shard_dataset
from finetune.data.split import Split
from finetune.data.transforms import batch_mixing, crop_scale, eval_transform, per_image, shift_pixels, train_transform
from finetune.runtime.hardware import Choice, LoaderSettings, available_memory, choose_cache, choose_loader, free_disk
from finetune.runtime.progress import PhaseTimes
from zoo.cache import cache_root
from zoo.spec import ArchSpec, Preprocessing

PARTS_OF_STAGE = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}


class MixBatch:
    """Collate a batch with ``collate``, then mix it (MixUp / CutMix): labels become class probabilities."""

    def __init__(self, collate: Callable[[list[Any]], tuple[Tensor, Tensor]], mixing: Callable[..., Any]) -> None:
        self.collate = collate
        self.mixing = mixing

    def __call__(self, samples: list[Any]) -> tuple[Tensor, Tensor]:
        return self.mixing(*self.collate(samples))


class ImageDataModule(pl.LightningDataModule):
    """Train / val / test loaders of ``split`` at ``image_size`` for the entry ``spec``.

    ``preprocessing`` is that of the weights the run starts from (``zoo.weights.weights_preprocessing``); without
    it the entry's own. Its crop is set to ``image_size``, the resize keeping its ratio.

    ``config.cache`` decides where images are decoded: every epoch (``none``), once into memory, or
    once into a memory-mapped file under ``$ZOO_CACHE/decoded`` that later runs reuse (``disk``);
    ``auto`` takes memory when the decoded images fit the budget (see ``choose_cache``).
    """

    def __init__(self, split: Split, spec: ArchSpec, image_size: int, config: DataConfig,
                 times: PhaseTimes | None = None, preprocessing: Preprocessing | None = None) -> None:
        super().__init__()
        self.times = times or PhaseTimes()  # decoding (and feature extraction) seconds, for the summary
        self.split = split
        self.spec = spec
        self.image_size = image_size
        self.preprocessing = (preprocessing or spec.preprocessing).at(image_size)
        self.config = config
        self.transforms = {
            "train": train_transform(self.preprocessing, config.augment),
            "val": eval_transform(self.preprocessing),
            "test": eval_transform(self.preprocessing),
        }
        self.datasets: dict[str, Dataset[tuple[Any, int]]] = {}
        self.cache = self._choose_cache()

    def _choose_cache(self) -> Choice:
        if isinstance(self.split, ShardSplit):
            if isinstance(self.split.decoded, int):
                return Choice("none", f"streamed from the shards, decoded when they were written ({self.split.decoded} "
                                      "px squares)")
            decoding = ("images up to 96×96 px decoded when the shards were written, larger ones as they arrive"
                        if self.split.decoded == "auto" else "each image decoded as it arrives")
            return Choice("none", f"streamed from the shards, {decoding} (in the loader's workers, or in this process "
                                  "where it starts none), resized and cropped batch by batch")
        images = len(self.split.train) + len(self.split.val) + len(self.split.test)
        needed = decoded_bytes(images, self.preprocessing.resize)
        return choose_cache(self.config.cache, needed, available_memory(), free_disk(cache_root()))

    def prepare_data(self) -> None:
        # Runs once per machine before the other processes of a distributed run read the file.
        if self.cache.value == "disk":
            for part in PARTS_OF_STAGE["fit"]:
                self._pixels(part)

    def setup(self, stage: str) -> None:
        processes, count = (self.trainer.world_size if self.trainer is not None else 1), len(self.split.val)
        if "val" in PARTS_OF_STAGE[stage] and count < processes:
            # A process without a validation image would skip validation and leave the others waiting for it.
            raise ConfigError(f"{count} validation image{'s' if count != 1 else ''} cannot be shared by {processes} "
                              "processes (each validates images of its own): use fewer --devices or --num-nodes, or a "
                              "larger --val-fraction")
        for part in PARTS_OF_STAGE[stage]:
            if part not in self.datasets:
                self.datasets[part] = self._dataset(part)

    def _pixels(self, part: str) -> np.ndarray:
        samples = getattr(self.split, part)
        return decoded_pixels(samples, self.preprocessing.resize, self.image_size,
                              InterpolationMode(self.preprocessing.interpolation), self.cache.value, self.times)

    def _dataset(self, part: str) -> Dataset[tuple[Any, int]]:
        samples = getattr(self.split, part)
        if isinstance(self.split, ShardSplit):
            # Training streams each process's share (LitData's, resumable); validation and test read samples by
            # index, shared out by the sampler as a folder's are (LitData shares by whole batches: a process
            # could get no validation image at all).
            # prepare() seeded every process alike, and LitData needs one shuffle seed across them.
            batched = self._batched_shards(part)
            return shard_dataset(self.split, part, None if batched else self.transforms[part], shuffle=part == "train",
                                 seed=torch.initial_seed() % 2**31, alone=part != "train", pixels=batched)
        if self.cache.value == "none":
            return ImageDataset(samples, self.transforms[part])
        labels = [sample.label for sample in samples]
        # Policies like TrivialAugment exist only per image; crops and flips are made batch by batch (CropBatch).
        by_image = part == "train" and per_image(self.config.augment)
        return DecodedImages(self._pixels(part), labels, self.transforms[part] if by_image else None)

    def _batched_shards(self, part: str) -> bool:
        """Whether ``part`` streams squares that CropBatch crops batch by batch, as a folder's decode-once cache does
        (a policy that exists only per image, like TrivialAugment, takes each image through the usual transforms
        instead). Byte shards are decoded as they stream (in the loader's workers, if any), and resized to those squares
        batch by batch."""
        return isinstance(self.split, ShardSplit) and not (part == "train" and per_image(self.config.augment))

    def _collate(self, part: str) -> Callable[[list[Any]], tuple[Tensor, Tensor]] | None:
        dataset = self.datasets[part]
        training = part == "train"
        crop = None
        if (isinstance(dataset, DecodedImages) and dataset.transform is None) or self._batched_shards(part):
            augment = training and self.config.augment not in ("none", "shift")
            squares = (Squares(self.preprocessing.resize, self.image_size, self.preprocessing.interpolation)
                       if self._batched_shards(part) else None)
            crop = CropBatch(self.image_size, self.preprocessing.mean, self.preprocessing.std, augment,
                             crop_scale(self.config.augment), squares,
                             shift=shift_pixels(self.config.augment, self.image_size) if training else 0)
        mixing = batch_mixing(self.config.mixup, self.config.cutmix, len(self.split.classes)) if training else None
        return crop if mixing is None else MixBatch(crop or default_collate, mixing)

    def loader_settings(self, num_images: int) -> LoaderSettings:
        """Workers and pinned memory for this machine and the device the trainer runs on."""
        return choose_loader(self.config.num_workers, num_images, gpu=self._on_gpu())

    def _on_gpu(self) -> bool:
        if self.trainer is None:  # loaders used outside a Trainer feed the GPU when there is one
            return torch.cuda.is_available()
        return self.trainer.strategy.root_device.type == "cuda"

    def loader(self, part: str, in_process: bool = False, batch_size: int | None = None) -> DataLoader:
        """Every image of ``part`` in order, in this process alone (the held-out measurement, on rank 0); with
        ``in_process``, no worker processes load them."""
        return self._loader(part, shuffle=False, in_process=in_process, batch_size=batch_size)

    def _loader(self, part: str, shuffle: bool, sampler: Sampler[int] | None = None,
                in_process: bool = False, batch_size: int | None = None) -> DataLoader:
        if part not in self.datasets:
            self.setup("test" if part == "test" else "fit")
        dataset = self.datasets[part]
        size = len(cast(Sized, dataset))  # torch's Dataset type promises no __len__; every dataset here has one
        settings = LoaderSettings(0, False, False) if in_process else self.loader_settings(size)
        if isinstance(self.split, ShardSplit) and part == "train":
            from litdata import StreamingDataLoader

            # LitData's loader: its state (samples yielded, epoch) goes into the checkpoint, so a resume continues
            # mid-epoch where it stopped; shuffling and each process's share are the dataset's own.
            return StreamingDataLoader(dataset, batch_size=batch_size or self.config.batch_size,
                                       num_workers=settings.num_workers, pin_memory=settings.pin_memory,
                                       persistent_workers=settings.persistent_workers,
                                       collate_fn=self._collate(part))
        return DataLoader(
            dataset,
            batch_size=batch_size or self.config.batch_size,
            shuffle=shuffle,
            sampler=sampler,
            num_workers=settings.num_workers,
            pin_memory=settings.pin_memory,
            persistent_workers=settings.persistent_workers,
            drop_last=shuffle and size > self.config.batch_size,
            collate_fn=self._collate(part),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        # Lightning's own distributed sampler pads the split to a multiple of the processes, counting some images
        # twice in the validation figures; this one gives each process its share, every image once (the
        # torchmetrics states are summed over the processes when computed, so uneven shares add up right).
        trainer = self.trainer
        distributed = trainer.distributed_sampler_kwargs if trainer is not None and trainer.world_size > 1 else None
        if distributed is None:
            return self._loader("val", shuffle=False)
        self.setup("validate")
        sampler = UnrepeatedDistributedSampler(self.datasets["val"], shuffle=False, **distributed)
        return self._loader("val", shuffle=False, sampler=sampler)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
