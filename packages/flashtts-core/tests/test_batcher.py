import asyncio
import threading
import time

import pytest
from flashtts_core.batcher import DynamicBatcher


async def test_concurrent_items_are_batched_and_results_keep_order():
    seen = []

    def double(batch):
        seen.append(len(batch))
        time.sleep(0.01)
        return [x * 2 for x in batch]

    batcher = DynamicBatcher(double, batch_size=4, wait_timeout=0.05, name="test")
    results = await asyncio.gather(*(batcher.submit(i) for i in range(10)))
    assert results == [i * 2 for i in range(10)]
    assert max(seen) == 4 and sum(seen) == 10
    batcher.close()


async def test_work_runs_off_the_event_loop():
    loop_thread = threading.get_ident()
    threads = []

    def work(batch):
        threads.append(threading.get_ident())
        time.sleep(0.2)
        return batch

    batcher = DynamicBatcher(work, batch_size=1, wait_timeout=0)
    ticks = 0

    async def ticker():
        nonlocal ticks
        for _ in range(10):
            await asyncio.sleep(0.01)
            ticks += 1

    await asyncio.gather(batcher.submit(1), ticker())
    assert ticks == 10  # the loop kept running while the batch slept
    assert threads and threads[0] != loop_thread
    batcher.close()


async def test_a_failing_batch_fails_only_its_items():
    def fn(batch):
        if "bad" in batch:
            raise ValueError("bad item")
        return batch

    batcher = DynamicBatcher(fn, batch_size=1, wait_timeout=0)
    with pytest.raises(ValueError):
        await batcher.submit("bad")
    assert await batcher.submit("good") == "good"
    batcher.close()


async def test_close_fails_queued_items_instead_of_hanging():
    started = threading.Event()
    release = threading.Event()

    def slow(batch):
        started.set()
        release.wait(5)
        return batch

    batcher = DynamicBatcher(slow, batch_size=1, wait_timeout=0)
    first = asyncio.ensure_future(batcher.submit(1))
    await asyncio.to_thread(started.wait, 5)
    queued = asyncio.ensure_future(batcher.submit(2))
    await asyncio.sleep(0.05)
    batcher.close()
    release.set()
    with pytest.raises(RuntimeError, match="closed"):
        await asyncio.wait_for(queued, 2)
    first.cancel()
