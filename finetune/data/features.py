"""Backbone features computed once per image, for training only the head on a frozen backbone (a linear probe).

With the backbone frozen, it runs once per image, not once per epoch. The features (eval mode; optionally K
augmented views per image) are kept in memory or in ``$ZOO_CACHE/features``, keyed by the architecture, a
digest of the backbone's weights, the image size, the transform, the precision and every file's path, size
and modification time, so a second run on the same data reads them back. The LightningModule is a
``FeatureProbe`` (``finetune.training.module``) that runs only its head: its metrics, checkpoints and exported model
(backbone included) are those of a normal run.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from finetune.config import DataConfig, RunConfig
from finetune.data.cache_store import cache_key, cache_path
from finetune.data.datamodule import PARTS_OF_STAGE, ImageDataModule
from finetune.data.images import ImageDataset
from finetune.data.split import Split
from finetune.runtime.hardware import Choice, LoaderSettings
from finetune.runtime.progress import PhaseTimes, tracked
from finetune.training.module import Classifier
from zoo._io import save_atomic
from zoo.spec import ArchSpec, Preprocessing

FORMAT_VERSION = 1  # bump when the stored features change meaning


def backbone_digest(network: nn.Module, head: str) -> str:
    """A digest of every weight and buffer outside ``head``: the same backbone, whatever its origin, gives the same
    digest."""
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(network.state_dict().items()):
        if name == head or name.startswith(f"{head}."):
            continue
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def extract_features(network: nn.Module, head: str, batches: Iterable[tuple[Tensor, Tensor]], device: torch.device,
                     memory_format: torch.memory_format, context: Callable[[], AbstractContextManager]) -> Tensor:
    """The inputs of ``network``'s ``head`` for every image of ``batches`` (N×D, float32 on the CPU).

    The network runs whole, in eval mode: the head's input is captured by a hook, so no copy of the
    network is made and every architecture's own forward (pooling, flattening, dropout) is respected.
    ``context`` makes the precision context (autocast) to run in. The caller restores the training mode.
    """
    captured: list[Tensor] = []
    hook = network.get_submodule(head).register_forward_hook(
        lambda _module, inputs, _output: captured.append(inputs[0].float().cpu())
    )
    network.to(device).eval()
    try:
        with torch.no_grad(), context():
            for images, _labels in batches:
                network(images.to(device, memory_format=memory_format, non_blocking=True))
    finally:
        hook.remove()
    return torch.cat(captured)


class FeatureSet(Dataset[tuple[Tensor, int]]):
    """Samples as ``(features, label)`` from an N×V×D tensor: one of the V views of each image, at random."""

    def __init__(self, features: Tensor, labels: list[int]) -> None:
        self.features = features
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        views = self.features.shape[1]
        # A single view draws no random number, so the shuffling matches a run without the cache.
        view = int(torch.randint(views, ())) if views > 1 else 0
        return self.features[index, view], self.labels[index]


def uses_feature_cache(config: RunConfig, spec: ArchSpec) -> bool:
    """A frozen backbone trains on cached features unless caching is turned off (``--cache none``) or the network
    has several classifiers: distilled DeiT's two read different tokens, so no one input of a head is cached."""
    return config.optim.freeze == "backbone" and config.data.cache != "none" and len(spec.heads) == 1


class FeatureDataModule(ImageDataModule):
    """Loaders of backbone features of ``module``'s network instead of images (see the module docstring).

    ``config.feature_views`` = 0 computes one un-augmented (evaluation) view per training image; K > 0
    computes K views through the training transform and each epoch draws one of them per image.
    """

    def __init__(self, split: Split, spec: ArchSpec, image_size: int, config: DataConfig, module: Classifier,
                 times: PhaseTimes | None = None, preprocessing: Preprocessing | None = None) -> None:
        self.module = module
        super().__init__(split, spec, image_size, config, times, preprocessing)

    def _choose_cache(self) -> Choice:
        if self.config.cache == "memory":
            return Choice("memory", "backbone features kept in memory for this run")
        reason = "as requested" if self.config.cache == "disk" else "backbone features are small"
        return Choice("disk", f"{reason}: features kept in {cache_path('features', '', '')} for later runs")

    def prepare_data(self) -> None:
        # Once per machine, so the processes of a distributed run read the features instead of each computing them.
        if self.cache.value == "disk":
            for part in PARTS_OF_STAGE["fit"]:
                self._features(part)

    def _dataset(self, part: str) -> Dataset[tuple[Tensor, int]]:
        return FeatureSet(self._features(part), [sample.label for sample in getattr(self.split, part)])

    def loader_settings(self, num_images: int) -> LoaderSettings:
        # The features already sit in memory: worker processes would only copy them.
        return LoaderSettings(0, pin_memory=self._on_gpu(), persistent_workers=False)

    @functools.cached_property
    def _backbone(self) -> str:
        return backbone_digest(self.module.network, self._head)

    @property
    def _head(self) -> str:
        """The one head whose input is cached (``uses_feature_cache`` never picks a network with several)."""
        (head,) = self.module.heads
        return head

    def _features(self, part: str) -> Tensor:
        samples = getattr(self.split, part)
        views = self.config.feature_views if part == "train" else 0
        transform = self.transforms["train" if views else "val"]
        # Augmented views depend on the seed; the seed of the run (set by seed_everything) makes them repeatable.
        seed = torch.initial_seed() if views else None
        precision = self.trainer.precision if self.trainer is not None else "32-true"
        key = cache_key(samples, version=FORMAT_VERSION, arch=self.spec.name, backbone=self._backbone,
                        image_size=self.image_size, transform=repr(transform), views=views, seed=seed,
                        precision=precision)
        path = cache_path("features", key, ".pt")
        if self.cache.value == "disk" and path.is_file():
            try:
                return torch.load(path, weights_only=True)
            except Exception:  # noqa: BLE001 - a damaged cache entry (any reason) is computed again and replaced
                pass
        features = self._extract(ImageDataset(samples, transform), max(1, views), seed or 0)
        if self.cache.value == "disk":
            save_atomic(features, path)
        return features

    def _extract(self, images: ImageDataset, views: int, seed: int) -> Tensor:
        """N×views×D features; the run's random numbers are left as they were (a cached run matches this one)."""
        trainer = self.trainer
        device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
        context = trainer.precision_plugin.forward_context if trainer is not None else nullcontext
        settings = super().loader_settings(len(images))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            loader = DataLoader(images, batch_size=self.config.batch_size, num_workers=settings.num_workers,
                                pin_memory=settings.pin_memory, generator=torch.Generator().manual_seed(seed))
            was_training = self.module.training
            try:
                views_of = [extract_features(self.module.network, self._head,
                                             tracked(loader, len(loader), "features",
                                                     f"extracting backbone features, view {view + 1} of {views}"
                                                     if views > 1 else "extracting backbone features",
                                                     self.times, "batches"),
                                             device, self.module.memory_format, context) for view in range(views)]
            finally:
                self.module.train(was_training)
        return torch.stack(views_of, dim=1)
