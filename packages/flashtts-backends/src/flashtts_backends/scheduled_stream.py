"""The consumer side of a batching scheduler thread (torch, llama-cpp): one sequence's tokens on the loop.

The scheduler thread calls the sequence's ``emit`` with token lists, an exception, and finally
``done``; ``emit`` is thread-safe. A consumer that stops iterating cancels the sequence and waits,
without blocking the loop, until the scheduler has dropped its row, so the slot is really free when
the consumer moves on.
"""

from __future__ import annotations

import asyncio
from typing import AsyncIterator, Callable, Protocol


class Scheduled(Protocol):
    cancel: object  # a threading.Event


async def stream_scheduled(
    scheduler, make_sequence: Callable[[Callable[[object], None]], Scheduled], done: object
) -> AsyncIterator[list[int]]:
    """Submit ``make_sequence(emit)`` to ``scheduler`` and yield what the scheduler emits for it."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    seq = None

    def emit(item: object) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the consumer's loop is gone: nobody is listening
            seq.cancel.set()

    seq = make_sequence(emit)
    scheduler.submit(seq)
    finished = False
    try:
        while True:
            item = await queue.get()
            if item is done:
                finished = True
                break
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        if not finished:
            seq.cancel.set()
            scheduler.wake()
            try:
                while await asyncio.shield(queue.get()) is not done:
                    pass
            except asyncio.CancelledError:
                pass
