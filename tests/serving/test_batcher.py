"""Dynamic batching: concurrent requests share a call of the model; limits, order, errors, stop."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from contriever.serving.batcher import DynamicBatcher, ShuttingDown


class Recorder:
    """A `process` that doubles numbers, records each batch and its thread, and can be slowed down."""

    def __init__(self, delay: float = 0.0):
        self.batches: list[list[int]] = []
        self.threads: set[str] = set()
        self.delay = delay

    def __call__(self, items):
        self.batches.append(list(items))
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay)
        return [2 * item for item in items]


async def _run(batcher, requests):
    await batcher.start()
    try:
        return await asyncio.gather(*(batcher.submit(items) for items in requests))
    finally:
        await batcher.stop()


def test_concurrent_requests_share_one_batch_and_results_go_back_in_order():
    process = Recorder()
    batcher = DynamicBatcher(process, max_batch_size=64, max_wait_ms=50)
    requests = [[i] for i in range(10)] + [[100, 101, 102]]
    results = asyncio.run(_run(batcher, requests))
    assert results == [[2 * i for i in items] for items in requests]
    assert len(process.batches) == 1 and sorted(process.batches[0]) == sorted(sum(requests, []))
    assert len(process.threads) == 1 and next(iter(process.threads)).startswith("contriever-model")


def test_batches_never_exceed_max_batch_size_except_one_large_request():
    process = Recorder()
    batcher = DynamicBatcher(process, max_batch_size=4, max_wait_ms=20)
    requests = [[i] for i in range(9)] + [list(range(50, 57))]
    results = asyncio.run(_run(batcher, requests))
    assert results == [[2 * i for i in items] for items in requests]
    sizes = [len(batch) for batch in process.batches]
    assert sum(sizes) == 16
    assert all(size <= 4 for size in sizes if size != 7)  # the 7-item request runs as a batch of its own
    assert 7 in sizes


def test_load_builds_batches_while_the_model_is_busy():
    """With a slow model and no wait at all, requests arriving during a forward pass form the next batch."""
    process = Recorder(delay=0.05)
    batcher = DynamicBatcher(process, max_batch_size=64, max_wait_ms=0)

    async def staggered():
        await batcher.start()
        try:
            first = asyncio.create_task(batcher.submit([0]))
            await asyncio.sleep(0.01)  # the first batch is running now
            rest = [asyncio.create_task(batcher.submit([i])) for i in range(1, 9)]
            return await asyncio.gather(first, *rest)
        finally:
            await batcher.stop()

    assert asyncio.run(staggered()) == [[2 * i] for i in range(9)]
    assert [len(batch) for batch in process.batches] == [1, 8]


def test_a_lone_request_waits_at_most_about_max_wait():
    process = Recorder()
    batcher = DynamicBatcher(process, max_batch_size=64, max_wait_ms=30)

    async def lone():
        await batcher.start()
        try:
            start = time.perf_counter()
            await batcher.submit([1])
            return time.perf_counter() - start
        finally:
            await batcher.stop()

    waited = asyncio.run(lone())
    assert 0.025 <= waited < 2.0  # waited for company, then went alone (generous bound: busy machines)


def test_disabled_batching_processes_each_request_alone():
    process = Recorder()
    batcher = DynamicBatcher(process, max_batch_size=64, max_wait_ms=50, enabled=False)
    requests = [[i] for i in range(6)] + [[7, 8]]
    assert asyncio.run(_run(batcher, requests)) == [[2 * i for i in items] for items in requests]
    assert sorted(len(batch) for batch in process.batches) == [1, 1, 1, 1, 1, 1, 2]


def test_a_failing_batch_fails_its_requests_and_the_batcher_goes_on():
    calls = []

    def process(items):
        calls.append(list(items))
        if -1 in items:
            raise ValueError("bad item")
        return items

    batcher = DynamicBatcher(process, max_batch_size=64, max_wait_ms=20)

    async def scenario():
        await batcher.start()
        try:
            failed = await asyncio.gather(batcher.submit([-1]), batcher.submit([5]), return_exceptions=True)
            after = await batcher.submit([6])
            return failed, after
        finally:
            await batcher.stop()

    failed, after = asyncio.run(scenario())
    assert all(isinstance(result, ValueError) for result in failed)
    assert after == [6]


def test_stop_fails_waiting_requests_and_refuses_new_ones():
    release = threading.Event()

    def process(items):
        release.wait(5)
        return items

    batcher = DynamicBatcher(process, max_batch_size=1, max_wait_ms=0)

    async def scenario():
        await batcher.start()
        running = asyncio.create_task(batcher.submit([1]))
        await asyncio.sleep(0.05)
        waiting = asyncio.create_task(batcher.submit([2]))  # queued behind the running batch
        await asyncio.sleep(0.01)
        release.set()
        await batcher.stop()
        results = await asyncio.gather(running, waiting, return_exceptions=True)
        with pytest.raises(ShuttingDown):
            await batcher.submit([3])
        return results

    running, waiting = asyncio.run(scenario())
    assert isinstance(waiting, ShuttingDown)
    assert running == [1] or isinstance(running, ShuttingDown)


def test_settings_are_checked():
    with pytest.raises(ValueError, match="max_batch_size"):
        DynamicBatcher(Recorder(), max_batch_size=0)
    with pytest.raises(ValueError, match="max_wait_ms"):
        DynamicBatcher(Recorder(), max_wait_ms=-1)
