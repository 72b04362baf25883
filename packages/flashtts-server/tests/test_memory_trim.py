"""malloc_trim gives freed heap memory back (memory_trim.py), and the diagnostic report reads it."""

from __future__ import annotations

import ctypes
import json
import types

import pytest
from flashtts_server.memory_report import malloc_stats, proc_status
from flashtts_server.memory_trim import MIN_GROWTH, MallocTrimmer, _rss, glibc_malloc_trim

trim = glibc_malloc_trim()
pytestmark = pytest.mark.skipif(trim is None, reason="needs glibc's malloc_trim")


def fragment(libc, blocks: int = 1600, size: int = 64 << 10) -> list[int]:
    """100 MiB of 64 KiB heap blocks (below glibc's mmap threshold), touched, then every other one
    freed: 50 MiB of free chunks between live ones, which free() alone leaves resident."""
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    ptrs = [libc.malloc(size) for _ in range(blocks)]
    for p in ptrs:
        ctypes.memset(p, 1, size)
    for p in ptrs[::2]:
        libc.free(p)
    return ptrs[1::2]


def test_trim_gives_back_free_chunks_between_live_ones():
    libc = ctypes.CDLL(None)
    # Free memory earlier tests left in this process's arenas would take the new blocks without RSS
    # growing: give it back first, so the growth below is this test's own.
    trim(0)
    app = types.SimpleNamespace(state=types.SimpleNamespace(runtime=None))
    trimmer = MallocTrimmer(app, interval=60, trim=trim)
    kept = fragment(libc)
    try:
        assert _rss() - trimmer.base >= MIN_GROWTH
        assert trimmer.due(now=trimmer.last)  # grown, and nothing synthesizing: trim now
        released = trimmer.trim()
        assert released >= 40 << 20, f"only {released >> 20} MiB given back"
        assert trimmer.trims == 1 and not trimmer.due(now=trimmer.last)
    finally:
        for p in kept:
            libc.free(p)


def test_busy_server_trims_only_after_the_interval():
    libc = ctypes.CDLL(None)
    busy = types.SimpleNamespace(active_generations=3)
    lifecycle = types.SimpleNamespace(pending=1)
    app = types.SimpleNamespace(state=types.SimpleNamespace(runtime=busy, lifecycle=lifecycle))
    trimmer = MallocTrimmer(app, interval=60, trim=trim)
    kept = fragment(libc)
    try:
        assert not trimmer.due(now=trimmer.last + 1)
        assert trimmer.due(now=trimmer.last + 61)
        busy.active_generations = 0
        assert not trimmer.due(now=trimmer.last + 1)  # generation done, its response still being decoded
        lifecycle.pending = 0
        assert trimmer.due(now=trimmer.last + 1)
    finally:
        for p in kept:
            libc.free(p)


def test_report_figures():
    status, heap = proc_status(), malloc_stats()
    assert status["VmRSS"] >= status["RssAnon"] > 0
    assert heap is not None and heap["in_use"] > 0
    json.dumps({"status": status, "heap": heap})


def test_idle_after_a_busy_trim_trims_again():
    """A trim while busy records RSS with the running generations' memory in it: going idle after
    more synthesis trims again even though RSS is now below that figure."""
    runtime = types.SimpleNamespace(active_generations=2, generated_tokens=100)
    app = types.SimpleNamespace(state=types.SimpleNamespace(runtime=runtime))
    trimmer = MallocTrimmer(app, interval=60, trim=trim)
    assert not trimmer.due(now=trimmer.last + 1)  # nothing generated since it started
    runtime.generated_tokens = 500
    assert trimmer.due(now=trimmer.last + 61)  # busy, interval passed
    trimmer.trim()
    trimmer.base += 64 << 20  # as if the trim had happened with 64 MiB of generations alive
    runtime.generated_tokens, runtime.active_generations = 900, 0
    assert trimmer.due(now=trimmer.last + 1)
    trimmer.trim()
    assert not trimmer.due(now=trimmer.last + 1)  # idle and trimmed: nothing more to do
