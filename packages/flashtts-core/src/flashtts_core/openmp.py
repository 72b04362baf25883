"""OpenMP teams on a CPU: one thread leads the team that does the model work, no other thread keeps one.

torch's CPU kernels and ggml's (llama.cpp) run their parallel regions on GNU OpenMP (libgomp, one
copy in the process: both load it by its soname). Every thread that starts a parallel region becomes
the master of its own team, and the team's worker threads stay parked for as long as that thread
lives. libgomp counts every thread in every team, and once that count is above the number of CPUs
it cuts the spin-wait of *every* team to almost nothing: the hundreds of barriers of one decode step
then each cost a futex sleep and wake-up. On a 2-core machine one extra team anywhere (the event
loop's thread, which ran a torch op during loading; a loader thread) slows llama.cpp's decode on
the scheduler thread from 22 to 16 tokens/s (Spark 0.5B q8_0): bench/decode_threads.py shows it.

:func:`release_team` lets the calling thread's workers exit (``omp_pause_resource_all``, OpenMP 5);
:class:`TeamlessThreadPool` calls it after every job, so the threads that load models, decode
uploads and read files never keep a team. The thread that runs the model (an LLM backend's
scheduler, with the codec between its steps) keeps its team and stays under the limit.

The event loop's thread must not raise a team again once it has given its up: one torch op on a
large tensor there (torch's sampler filling a 166k-entry lookup table for a new request did) brings
the workers back for the rest of the process, and the torch backend's decode drops from 24 to 17
tokens/s. :func:`stay_teamless` gives the team up and runs the thread's later parallel regions on
the thread alone (its own OpenMP ``nthreads`` setting, ``omp_set_num_threads(1)``, which other
threads do not see).
"""

from __future__ import annotations

import ctypes
import os
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Optional

OMP_PAUSE_SOFT = 1  # omp_pause_resource_t: the threads go, the runtime stays initialised
_LIBRARIES = ("libgomp.so.1", "libgomp.1.dylib")
_runtime: Optional[Any] = None


def _loaded_runtime() -> Optional[Any]:
    """The process's libgomp when something (torch, ggml) has loaded it, else None (never loads it);
    its ``omp_pause_resource_all`` and ``omp_set_num_threads`` are set up for ctypes."""
    global _runtime
    if _runtime is not None:
        return _runtime
    noload = getattr(os, "RTLD_NOLOAD", None)
    if noload is None:  # Windows: no libgomp there
        return None
    for name in _LIBRARIES:
        try:
            library = ctypes.CDLL(name, mode=noload | os.RTLD_LAZY)
        except OSError:
            continue
        pause = getattr(library, "omp_pause_resource_all", None)
        if pause is None:  # a libgomp older than GCC 9
            return None
        pause.argtypes = [ctypes.c_int]
        pause.restype = ctypes.c_int
        library.omp_set_num_threads.argtypes = [ctypes.c_int]
        library.omp_set_num_threads.restype = None
        _runtime = library
        return library
    return None


def release_team() -> bool:
    """Let the OpenMP worker threads of the calling thread's team exit; True when libgomp is loaded
    and did it (a thread with no team: nothing happens). Must not be called inside a parallel region."""
    runtime = _loaded_runtime()
    return runtime is not None and runtime.omp_pause_resource_all(OMP_PAUSE_SOFT) == 0


def stay_teamless() -> bool:
    """:func:`release_team`, and run the calling thread's later parallel regions serially, so it
    never leads a team again (the event loop's thread after the model loaded: it only does small
    work, and any kernel it runs would otherwise throttle the model's thread). Only this thread's
    setting changes; a ``torch.set_num_threads`` on it later undoes it. True when libgomp is loaded."""
    runtime = _loaded_runtime()
    if runtime is None:
        return False
    torch = sys.modules.get("torch")
    if torch is not None:
        # torch sets a thread's OpenMP thread count from its own process-wide value the first time
        # the thread asks for it: let that happen now, so it does not override the setting below.
        torch.get_num_threads()
    runtime.omp_set_num_threads(1)
    return runtime.omp_pause_resource_all(OMP_PAUSE_SOFT) == 0


def _released(fn: Callable, args: tuple, kwargs: dict) -> Any:
    try:
        return fn(*args, **kwargs)
    finally:
        release_team()


class TeamlessThreadPool(ThreadPoolExecutor):
    """A thread pool whose threads give up their OpenMP team after each job (see the module)."""

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> Future:
        return super().submit(_released, fn, args, kwargs)
