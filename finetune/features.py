"""Backbone features computed once per image, for training only the head on a frozen backbone."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset


def backbone_digest(network: nn.Module, head: str) -> str:
    """A digest of every weight and buffer outside ``head``: the same backbone, whatever its origin, gives the same digest."""
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
