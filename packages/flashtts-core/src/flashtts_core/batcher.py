"""Dynamic micro-batching: concurrent requests are grouped and run in a worker thread."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Callable, Generic, Optional, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")

logger = logging.getLogger("flashtts.batcher")


class DynamicBatcher(Generic[T, R]):
    """Queue items; a worker takes up to ``batch_size`` of them, waiting at most ``wait_timeout``
    seconds for the batch to fill, and runs ``fn(batch) -> results`` in its own thread, or on
    ``executor`` when one is given (an LLM backend's ``compute_executor``: its decode thread).

    ``fn`` must return one result per item, in order. An exception fails that batch's items only.
    """

    def __init__(
        self,
        fn: Callable[[Sequence[T]], Sequence[R]],
        batch_size: int = 1,
        wait_timeout: float = 0.01,
        name: str = "batcher",
        executor: Optional[Executor] = None,
    ):
        self.fn = fn
        self.batch_size = max(1, batch_size)
        self.wait_timeout = max(0.0, wait_timeout)
        self.name = name
        self._own_executor = executor is None
        self._executor: Executor = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"flashtts-{name}")
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None
        self.batches_run = 0
        self.largest_batch = 0

    async def submit(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        if self._queue is None or self._worker is None or self._worker.done() or self._worker.get_loop() is not loop:
            self._queue = asyncio.Queue()
            self._worker = loop.create_task(self._run(), name=f"flashtts-{self.name}")
        future: asyncio.Future = loop.create_future()
        self._queue.put_nowait((item, future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        queue = self._queue
        assert queue is not None
        while True:
            batch = [await queue.get()]
            deadline = loop.time() + self.wait_timeout
            while len(batch) < self.batch_size:
                try:
                    batch.append(queue.get_nowait())
                    continue
                except asyncio.QueueEmpty:
                    pass
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(queue.get(), remaining))
                except (asyncio.TimeoutError, TimeoutError):
                    break
            live = [(item, fut) for item, fut in batch if not fut.done()]
            if not live:
                continue
            self.batches_run += 1
            self.largest_batch = max(self.largest_batch, len(live))
            try:
                results = await loop.run_in_executor(self._executor, self.fn, [item for item, _ in live])
                if len(results) != len(live):
                    raise RuntimeError(f"{self.name}: {len(results)} results for {len(live)} items")
            except Exception as exc:
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for (_, fut), result in zip(live, results):
                if not fut.done():
                    fut.set_result(result)

    def close(self) -> None:
        """Stop the worker; items still queued fail instead of waiting forever."""
        if self._worker is not None:
            self._worker.cancel()
        if self._queue is not None:
            while not self._queue.empty():
                _, fut = self._queue.get_nowait()
                if not fut.done():
                    fut.set_exception(RuntimeError(f"{self.name} is closed"))
        if self._own_executor:
            self._executor.shutdown(wait=False, cancel_futures=True)
