"""Requests batched under load: images that arrive while the model is busy run together in its next batch."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import torch
from torch import Tensor

Result = TypeVar("Result")


class Batcher:
    """Feeds preprocessed images to ``predict`` (a batch ``(N, 3, H, W)`` → probabilities ``(N, classes)``).

    Greedy batching: a batch takes every image waiting, up to ``max_batch_size``, and never waits for more. An
    idle server answers one image at once; under load, images queue while a batch runs and go in the next
    one, so batches grow with the load without a timeout to tune.
    """

    def __init__(self, predict: Callable[[Tensor], Tensor], max_batch_size: int) -> None:
        self.predict = predict
        self.max_batch_size = max_batch_size
        self._queue: asyncio.Queue[tuple[Tensor, asyncio.Future[tuple[Tensor, int]]]] = asyncio.Queue()
        # One thread runs the model: batches follow each other, each using torch's own intra-op threads.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="zoo-serve-model")
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._executor.shutdown(wait=True)

    async def submit(self, image: Tensor) -> tuple[Tensor, int]:
        """The probabilities of one preprocessed image ``(3, H, W)``, and the size of the batch it ran in."""
        future: asyncio.Future[tuple[Tensor, int]] = asyncio.get_running_loop().create_future()
        await self._queue.put((image, future))
        return await future

    async def exclusive(self, function: Callable[..., Result], *args: Any) -> Result:
        """``function(*args)`` on the model's thread, between two batches: nothing else uses the model meanwhile."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = [await self._queue.get()]
            while len(items) < self.max_batch_size and not self._queue.empty():
                items.append(self._queue.get_nowait())
            items = [(image, future) for image, future in items if not future.done()]  # clients that left
            if not items:
                continue
            batch = torch.stack([image for image, _ in items])
            try:
                probabilities = await loop.run_in_executor(self._executor, self.predict, batch)
            except Exception as error:  # noqa: BLE001  (handed to each waiting request; the loop goes on)
                for _, future in items:
                    if not future.done():
                        future.set_exception(error)
                continue
            for (_, future), row in zip(items, probabilities, strict=True):
                if not future.done():
                    future.set_result((row, len(items)))
