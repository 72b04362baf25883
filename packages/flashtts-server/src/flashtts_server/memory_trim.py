"""Giving freed memory back: glibc's ``malloc_trim(0)`` when the server goes idle.

Synthesis allocates tensors of ever-changing sizes from several threads (batch KV caches that grow
by doubling, decoder activations as long as the audio, each batch's own mix of lengths). glibc
serves them from its arenas, and what is freed stays there: only the top of an arena is returned by
itself, free chunks between live ones stay resident. Under a long mixed load that free space grows
whenever a rarer mix of sizes comes along: in the 3,000-request soak glibc's free-but-kept memory
rose by 81 MiB after warm-up while live allocations rose by 12 MiB and Python objects by 0.3 MiB
(``memory_report.py``; README "Memory over time"). ``malloc_trim(0)`` hands the free pages of every
arena back to the kernel (MADV_DONTNEED): RSS then follows what is live.

A task looks once a second: when tokens were generated (or RSS rose by ``MIN_GROWTH``) since the
last trim and no synthesis request is pending, it trims (off the event loop); while the server stays busy
it trims every ``interval`` seconds at most. ``--malloc_trim_interval 0`` turns it off; without glibc (musl, macOS, jemalloc
preloaded: its arenas are not glibc's) it does nothing useful and is not started.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
import time
from typing import Any, Callable, Optional

logger = logging.getLogger("flashtts.server")

MIN_GROWTH = 8 << 20  # bytes of RSS growth since the last trim worth a walk over the arenas
POLL = 1.0  # seconds between looks
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * _PAGE


def libc() -> Optional[ctypes.CDLL]:
    """The C library, or None where it cannot be found."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


def glibc_malloc_trim() -> Optional[Callable[[int], int]]:
    """glibc's ``malloc_trim``, or None where the C library has none or jemalloc/tcmalloc is preloaded."""
    if not os.path.exists("/proc/self/statm") or "malloc" in os.environ.get("LD_PRELOAD", ""):
        return None
    c = libc()
    fn = getattr(c, "malloc_trim", None) if c is not None else None
    if fn is not None:
        fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn


class MallocTrimmer:
    """Trims when the server is idle after growing, and every ``interval`` s at most while busy."""

    def __init__(self, app: Any, interval: float, trim: Callable[[int], int]):
        self.app = app
        self.interval = interval
        self._trim = trim
        self.base = _rss()  # RSS after the last trim
        self.last = time.monotonic()
        self.seen = self._activity()
        self.trims = 0
        self.released = 0  # bytes of RSS given back, all trims together

    def _activity(self) -> Any:
        """Tokens generated so far: a change means synthesis ran since the last look."""
        return getattr(getattr(self.app.state, "runtime", None), "generated_tokens", None)

    def due(self, now: float) -> bool:
        # Synthesis since the last trim, or RSS growth without it (roles prepared, uploads). Not RSS
        # alone: after a trim while busy, ``base`` holds the memory of the generations then running.
        if self._activity() == self.seen and _rss() - self.base < MIN_GROWTH:
            return False
        # Idle: no generation running and no synthesis response still being decoded or sent (a trim as
        # the last tokens come out would miss what the codec and encoders free after them).
        runtime = getattr(self.app.state, "runtime", None)
        pending = getattr(getattr(self.app.state, "lifecycle", None), "pending", 0)
        idle = (runtime is None or runtime.active_generations == 0) and pending == 0
        return idle or now - self.last >= self.interval

    def trim(self) -> int:
        """One ``malloc_trim(0)``; the bytes of RSS it gave back."""
        self.seen = self._activity()
        before = _rss()
        self._trim(0)
        self.base = _rss()
        self.last = time.monotonic()
        self.trims += 1
        released = max(0, before - self.base)
        self.released += released
        logger.debug("malloc_trim: %.1f MiB given back, RSS %.0f MiB", released / 2**20, self.base / 2**20)
        return released

    async def run(self) -> None:
        while True:
            await asyncio.sleep(POLL)
            if self.due(time.monotonic()):
                await asyncio.to_thread(self.trim)


def start_trimmer(app: Any, interval: float) -> Optional[asyncio.Task]:
    """The trimming task (None when turned off or without glibc)."""
    trim = glibc_malloc_trim() if interval > 0 else None
    if trim is None:
        return None
    trimmer = MallocTrimmer(app, interval, trim)
    app.state.malloc_trimmer = trimmer
    return asyncio.create_task(trimmer.run(), name="malloc-trim")
