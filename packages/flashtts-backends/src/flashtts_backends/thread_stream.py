"""Run a blocking token generator in a worker thread and stream its tokens to the event loop.

Used by the backends whose libraries only offer a blocking, one-sequence-at-a-time API (llama-cpp,
mlx-lm): the event loop never waits on model work, and a consumer that stops iterating sets a flag
the generator checks between tokens, so the worker is free again within one token.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from abc import abstractmethod
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import AsyncIterator, Callable, Iterator

from flashtts_core.backend import LLMBackend
from flashtts_core.errors import InvalidRequest
from flashtts_core.sampling import SamplingParams

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


class SerialThreadBackend(LLMBackend):
    """A backend whose library generates one sequence at a time, in one worker thread.

    Subclasses call ``super().__init__(context_length, seed, thread_name)`` and implement
    ``_generate``, a blocking iterator of token ids that checks ``cancel`` between tokens.
    """

    def __init__(self, context_length: int, seed: int, thread_name: str):
        self.context_length = context_length
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name)
        self._seeds = random.Random(seed)
        self.active = 0

    @abstractmethod
    def _generate(
        self, prompt_ids: list[int], params: SamplingParams, max_new: int, seed: int, cancel: threading.Event
    ) -> Iterator[int]:
        """Runs in the worker thread: yield new token ids (stop ids excluded) until done or cancelled."""

    async def stream(self, prompt_ids: list[int], params: SamplingParams) -> AsyncIterator[list[int]]:
        if not prompt_ids:
            raise InvalidRequest("empty prompt")
        room = self.prompt_room(prompt_ids, self.context_length)
        max_new = min(params.max_tokens, room)
        seed = params.seed if params.seed is not None else self._seeds.randrange(2**63)
        prompt = list(prompt_ids)
        self.active += 1
        try:
            # Closed explicitly, so the slot counts as free only once the worker has returned.
            async with contextlib.aclosing(
                stream_from_thread(self._executor, lambda cancel: self._generate(prompt, params, max_new, seed, cancel))
            ) as deltas:
                async for delta in deltas:
                    yield delta
        finally:
            self.active -= 1

    async def close(self) -> None:
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)
