"""Run a blocking token generator in a worker thread and stream its tokens to the event loop.

Used by the backends whose libraries only offer a blocking, one-sequence-at-a-time API (llama-cpp,
mlx-lm): the event loop never waits on model work, and a consumer that stops iterating sets a flag
the generator checks between tokens, so the worker is free again within one token.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Executor
from typing import AsyncIterator, Callable, Iterator

_DONE = object()


async def stream_from_thread(
    executor: Executor, produce: Callable[[threading.Event], Iterator[int]]
) -> AsyncIterator[list[int]]:
    """Yield ``[token]`` for each token ``produce(cancel)`` makes in a thread of ``executor``.

    ``produce`` must stop soon after ``cancel`` is set. When this generator is closed or its task
    cancelled, it sets ``cancel`` and waits (without blocking the loop) for the worker to finish.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    cancel = threading.Event()

    def emit(item: object) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the consumer's loop is gone: nobody is listening
            cancel.set()

    def run() -> None:
        try:
            if cancel.is_set():  # cancelled while waiting for the worker
                return
            for token in produce(cancel):
                if cancel.is_set():
                    return
                emit([token])
        except BaseException as exc:  # handed to the consumer, never lost in the thread
            emit(exc)
        finally:
            emit(_DONE)

    job = executor.submit(run)
    try:
        while True:
            item = await queue.get()
            if item is _DONE:
                break
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        cancel.set()
        # A job still queued is simply dropped; a running one frees its worker only when it returns.
        if not job.cancel():
            await asyncio.shield(asyncio.wrap_future(job))
