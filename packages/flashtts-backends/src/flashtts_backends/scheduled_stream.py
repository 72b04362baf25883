"""A batching scheduler thread (torch, llama-cpp) and its consumer side: one sequence's tokens on the loop.

``SchedulerThread`` is what both schedulers share: sequences wait in a list, one thread sleeps until
there is work, admits what fits and runs one batched step over every active sequence; ``submit``,
``wake`` and ``close`` are called from other threads. The scheduler thread calls a sequence's ``emit``
with token lists, an exception, and finally ``DONE``; ``emit`` is thread-safe. A consumer that stops
iterating cancels the sequence and waits, without blocking the loop, until the scheduler has dropped
its row, so the slot is really free when the consumer moves on.

The same thread also runs jobs handed to :attr:`SchedulerThread.executor` (an engine's codec on a
CPU) between two steps. On a CPU every thread that runs torch or ggml kernels leads its own OpenMP
team, and libgomp cuts its workers' spin-wait to almost nothing once the teams hold more threads than
there are cores: each of the hundreds of parallel regions in a decode step then pays a sleep and a
wake-up. One thread for the LLM and the codec keeps one team; the server's other threads give theirs
up (``flashtts_core.openmp``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from abc import ABC, abstractmethod
from collections import deque
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Protocol

from flashtts_core.sampling import SamplingParams

# What a scheduler hands to a sequence's consumer: a list of new ids, an exception, or DONE.
DONE = object()


@dataclass(eq=False)
class ScheduledSequence:
    """One request in flight. ``emit`` is thread-safe and delivers to the consumer on its loop."""

    prompt_ids: list[int]
    params: SamplingParams
    max_new: int
    sampler: Any  # the backend's sampler for this row
    emit: Callable[[object], None]
    cancel: threading.Event = field(default_factory=threading.Event)
    generated: int = 0
    next_input: int = -1  # the last sampled token, fed in the next decode step


class SchedulerThread(ABC):
    """Waiting and active sequences served by one thread; a subclass admits and steps them.

    ``_take_joining`` (under the lock) picks the waiting sequences that join now; ``_step`` runs with
    them outside the lock; ``_failed`` clears the batch after a step raised (every sequence in it
    then hears the exception and DONE, and the thread keeps serving)."""

    def __init__(self, backend: str, logger: logging.Logger):
        self.backend = backend
        self._logger = logger
        self._waiting: list[ScheduledSequence] = []
        self._active: list[ScheduledSequence] = []
        self._cond = threading.Condition()
        self._closed = False
        self._jobs: deque[tuple[Future, Callable, tuple, dict]] = deque()
        self.executor: Executor = _SchedulerExecutor(self)
        self._thread = threading.Thread(target=self._run, name=f"flashtts-{backend}-scheduler", daemon=True)
        self._thread.start()

    def run_job(self, fn: Callable, *args, **kwargs) -> Future:
        """Run ``fn(*args, **kwargs)`` on the scheduler thread, between two steps."""
        future: Future = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError(f"{self.backend} backend is closed")
            self._jobs.append((future, fn, args, kwargs))
            self._cond.notify()
        return future

    def submit(self, seq: ScheduledSequence) -> None:
        with self._cond:
            if self._closed:
                raise RuntimeError(f"{self.backend} backend is closed")
            self._waiting.append(seq)
            self._cond.notify()

    def wake(self) -> None:
        """Called when a consumer cancels, so an idle-looking scheduler drops the row promptly."""
        with self._cond:
            self._cond.notify()

    def close(self, timeout: float = 30) -> bool:
        """Stop the thread (waiting and active sequences hear an error); False if it is still busy."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=timeout)
        return not self._thread.is_alive()

    @abstractmethod
    def _take_joining(self) -> tuple[list, list]:
        """(sequences that join now, cancelled ones that never ran), taken off ``_waiting``; under the lock."""

    @abstractmethod
    def _step(self, joining: list) -> None:
        """Drop cancelled rows, admit ``joining``, run one batched decode step."""

    @abstractmethod
    def _failed(self, sequences: list) -> None:
        """Free what ``sequences`` (those joining and active when a step raised) held; empty the batch."""

    def _run_jobs(self) -> None:
        """The jobs queued now (not those they queue in turn), each to its end."""
        with self._cond:
            jobs, self._jobs = self._jobs, deque()
        for future, fn, args, kwargs in jobs:
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not self._waiting and not self._active and not self._jobs:
                    self._cond.wait()
                if self._closed:
                    break
                joining, dropped = self._take_joining()
            self._run_jobs()
            for seq in dropped:
                seq.emit(DONE)
            if not joining and not self._active:
                continue
            try:
                self._step(joining)
            except BaseException as exc:  # every consumer hears of it; the scheduler keeps serving
                self._logger.exception("%s backend: batched step failed", self.backend)
                failed = list(dict.fromkeys(joining + self._active))  # admitted ones are in both
                self._failed(failed)
                self._active = []
                for seq in failed:
                    seq.emit(exc)
                    seq.emit(DONE)
        with self._cond:
            left, self._waiting = self._waiting + self._active, []
            jobs, self._jobs = self._jobs, deque()
        for seq in left:
            seq.emit(RuntimeError(f"{self.backend} backend closed"))
            seq.emit(DONE)
        for future, _, _, _ in jobs:
            if future.set_running_or_notify_cancel():
                future.set_exception(RuntimeError(f"{self.backend} backend closed"))


class _SchedulerExecutor(Executor):
    """``concurrent.futures.Executor`` over a scheduler's thread (``loop.run_in_executor`` takes it)."""

    def __init__(self, scheduler: SchedulerThread):
        self._scheduler = scheduler

    def submit(self, fn, /, *args, **kwargs) -> Future:
        return self._scheduler.run_job(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        pass  # the backend's close() stops the thread


def shares_compute_thread(config) -> bool:
    """``--cpu_compute_thread shared`` (the default) in the options a backend was configured from."""
    return getattr(config.options, "cpu_compute_thread", "shared") == "shared"


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
