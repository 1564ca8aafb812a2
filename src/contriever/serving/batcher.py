"""Dynamic batching: the texts of concurrent requests encoded together in one forward pass.

The scheme of Hugging Face's text-embeddings-inference and of infinity: requests put their items on
a queue; one collector takes the first waiting request, then keeps taking requests until the batch
holds `max_batch_size` items or `max_wait_ms` has passed since it started collecting, and hands the
whole batch to `process`, which runs on one worker thread (the only thread that touches the model).
While that thread is busy, new requests pile up on the queue and form the next batch, so under load
batches grow by themselves and an idle server adds at most `max_wait_ms` to a lone request.

With `enabled=False` each request is processed on its own, one after another on the same thread:
the baseline that `benchmarks/serve_load.py` compares against.

The queue is bounded: with `max_queued` items already waiting, `submit` raises `QueueFull` at once
(the app answers 429 with its `retry_after`, an estimate from the recent time per item), so under a
burst beyond capacity clients are told to come back instead of waiting without bound.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from contriever.machine import release_freed_memory

TRIM_EVERY_S = 1.0  # freed memory goes back to the OS at most once a second (see release_freed_memory)


class ShuttingDown(RuntimeError):
    """The batcher was stopped while a request waited."""


class QueueFull(RuntimeError):
    """Too many items wait for the model; `retry_after` seconds is when it should have room again."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class DynamicBatcher:
    """`await batcher.submit(items)` returns `process(items)`, computed together with other requests'.

    `process(list_of_items) -> list_of_results` (one result per item, same order) runs on the single
    worker thread. A request with more than `max_batch_size` items is processed as one batch of its
    own. `on_batch(size, seconds)` is called after every call of `process` (for metrics).
    """

    def __init__(
        self,
        process: Callable[[list[Any]], Sequence[Any]],
        *,
        max_batch_size: int = 64,
        max_wait_ms: float = 2.0,
        enabled: bool = True,
        on_batch: Callable[[int, float], None] | None = None,
        max_queued: int | None = None,
    ):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be non-negative, got {max_wait_ms}")
        self.process = process
        self.max_batch_size = int(max_batch_size)
        self.max_wait = float(max_wait_ms) / 1000
        self.enabled = enabled
        self.on_batch = on_batch
        self.max_queued = max_queued
        self._seconds_per_item = 0.0  # moving average, for Retry-After
        self._waiting_unbatched = (
            0  # items submitted with batching off and not answered yet (loop thread only)
        )
        self._pending: collections.deque = collections.deque()
        self._trimmed = time.perf_counter()
        self._arrived: asyncio.Event | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._collector: asyncio.Task | None = None

    @property
    def running(self) -> bool:
        return self._executor is not None

    @property
    def queued(self) -> int:
        """Items waiting for the model (with batching off: submitted and not yet answered)."""
        return sum(len(items) for items, _ in self._pending) + self._waiting_unbatched

    def _admit(self, count: int) -> None:
        """Raise QueueFull if `count` more items would overfill the queue (an empty queue takes any)."""
        waiting = self.queued
        if self.max_queued is None or waiting == 0 or waiting + count <= self.max_queued:
            return
        retry_after = max(1, min(60, math.ceil(waiting * self._seconds_per_item)))
        raise QueueFull(
            f"the server is busy: {waiting:,} texts wait for the model (--max-queue {self.max_queued:,}); "
            f"retry in {retry_after} s",
            retry_after,
        )

    async def start(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="contriever-model")
        self._arrived = asyncio.Event()
        if self.enabled:
            self._collector = asyncio.create_task(self._collect(), name="contriever-batcher")

    async def stop(self) -> None:
        """Stop collecting, fail the requests still queued, and wait for the batch in progress."""
        if self._collector is not None:
            self._collector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._collector
            self._collector = None
        while self._pending:
            _, future = self._pending.popleft()
            if not future.done():
                future.set_exception(ShuttingDown("the server is shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def submit(self, items: list[Any]) -> list[Any]:
        if not self.running:
            raise ShuttingDown("the batcher is not running")
        if not items:
            return []
        self._admit(len(items))
        loop = asyncio.get_running_loop()
        if not self.enabled:
            self._waiting_unbatched += len(items)
            try:
                return await loop.run_in_executor(self._executor, self._timed, list(items))
            finally:
                self._waiting_unbatched -= len(items)
        future = loop.create_future()
        self._pending.append((list(items), future))
        self._arrived.set()
        return await future

    def _timed(self, items: list[Any]) -> list[Any]:
        start = time.perf_counter()
        results = list(self.process(items))
        if len(results) != len(items):
            raise RuntimeError(f"process returned {len(results)} results for {len(items)} items")
        per_item = (time.perf_counter() - start) / len(items)
        self._seconds_per_item = (
            per_item if not self._seconds_per_item else 0.8 * self._seconds_per_item + 0.2 * per_item
        )
        if self.on_batch is not None:
            self.on_batch(len(items), time.perf_counter() - start)
        if time.perf_counter() - self._trimmed > TRIM_EVERY_S:  # on the model thread, between batches
            release_freed_memory()
            self._trimmed = time.perf_counter()
        return results

    async def _next_batch(self) -> list[tuple[list[Any], asyncio.Future]]:
        """Wait for a request, then gather more until the batch is full or the wait is over."""
        while not self._pending:
            self._arrived.clear()
            await self._arrived.wait()
        loop = asyncio.get_running_loop()
        batch = [self._pending.popleft()]
        size = len(batch[0][0])
        deadline = loop.time() + self.max_wait
        while size < self.max_batch_size:
            if self._pending:
                if size + len(self._pending[0][0]) > self.max_batch_size:
                    break  # it starts the next batch
                batch.append(self._pending.popleft())
                size += len(batch[-1][0])
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)
        return batch

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            batch = [(items, future) for items, future in batch if not future.done()]  # client gone
            if not batch:
                continue
            flat = [item for items, _ in batch for item in items]
            try:
                results = await loop.run_in_executor(self._executor, self._timed, flat)
            except asyncio.CancelledError:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(ShuttingDown("the server is shutting down"))
                raise
            except Exception as error:  # the batch failed: every request in it gets the error
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            offset = 0
            for items, future in batch:
                if not future.done():
                    future.set_result(results[offset : offset + len(items)])
                offset += len(items)
