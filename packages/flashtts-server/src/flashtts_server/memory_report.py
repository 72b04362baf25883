"""Where the server's memory is, on demand: a diagnostic for soak runs, off unless asked for.

``FLASHTTS_MEMORY_REPORT=DIR`` (read by ``flashtts serve``) makes SIGUSR2 write ``DIR/memory-N.json``
(RSS split into anonymous and file pages, glibc's heap figures from ``mallinfo2``, the Python heap
``tracemalloc`` sees, live objects per type and the sizes of the server's caches) and, from the
second signal on, ``DIR/memory-N.tracemalloc`` (the snapshot). The first signal starts
``tracemalloc``: what it traces is exactly what was allocated after that point and is still alive
(loading the model under tracing would take minutes). Tracing slows the server and costs memory of
its own: figures from such a run are for finding growth, not for limits.

``python -m flashtts_server.memory_report A.json B.json`` prints what grew from report A to B: RSS
against the Python heap (what Python objects explain, what is native), object counts, cache sizes
and the allocation sites that grew most.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import signal
import sys
import threading
import tracemalloc
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Optional

ENV = "FLASHTTS_MEMORY_REPORT"
FRAMES = 8


def proc_status(pid: int | str = "self") -> dict[str, int]:
    """VmRSS, RssAnon, RssFile (KiB) and Threads of a process, from /proc."""
    wanted = {"VmRSS", "RssAnon", "RssFile", "Threads"}
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in wanted:
                out[key] = int(value.split()[0])
    return out


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks")
    ] + [("keepcost", ctypes.c_size_t)]


def _libc() -> Optional[ctypes.CDLL]:
    from .memory_trim import libc

    return libc()


def malloc_stats() -> Optional[dict[str, int]]:
    """glibc's heap (KiB): ``arena`` bytes from sbrk/arenas, ``mmapped`` by mmap, ``in_use`` and
    ``free`` inside the arenas. None under another allocator (jemalloc preloaded) or libc."""
    libc = _libc()
    fn = getattr(libc, "mallinfo2", None) if libc is not None else None
    if fn is None:
        return None
    fn.restype = _MallInfo2
    info = fn()
    return {
        "arena": info.arena >> 10,
        "mmapped": info.hblkhd >> 10,
        "in_use": info.uordblks >> 10,
        "free": info.fordblks >> 10,
        "top_pad": info.keepcost >> 10,
    }


def malloc_trim() -> Optional[dict[str, int]]:
    """glibc's malloc_trim(0) (the trimmer's, memory_trim.py), then RSS again (None without glibc)."""
    from .memory_trim import glibc_malloc_trim

    fn = glibc_malloc_trim()
    if fn is None:
        return None
    fn(0)
    return proc_status()


def cache_sizes(app) -> dict[str, Any]:
    """Entries in the server's own caches (what could grow with distinct inputs)."""
    runtime = getattr(app.state, "runtime", None)
    if runtime is None:
        return {}
    sizes: dict[str, Any] = {
        "role_cache": len(runtime._role_cache),
        "role_locks": len(runtime._role_locks),
        "reference_cache": len(runtime.reference_cache),
        "reference_cache_locks": len(runtime.reference_cache._locks),
        "active_generations": runtime.active_generations,
    }
    scheduler = getattr(getattr(runtime.engine, "backend", None), "_scheduler", None)
    head = getattr(scheduler, "head", None)
    if head is not None and hasattr(head, "_sets"):
        sizes["output_head_sets"] = len(head._sets)
    return sizes


def object_counts(top: int = 40) -> dict[str, int]:
    counts = Counter(type(o).__qualname__ for o in gc.get_objects())
    return dict(counts.most_common(top))


def torch_figures() -> dict[str, Any]:
    """Threads, and the tensors Python holds: their count and their distinct storages' bytes (KiB)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return {}
    storages: dict[int, int] = {}
    count = 0
    with warnings.catch_warnings():  # isinstance on torch's deprecated module attributes warns
        warnings.simplefilter("ignore")
        tensors = [obj for obj in gc.get_objects() if isinstance(obj, torch.Tensor)]
    for obj in tensors:
        count += 1
        try:
            storage = obj.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
        except Exception:  # meta, sparse, ...
            pass
    return {
        "num_threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "tensors": count,
        "tensor_kib": sum(storages.values()) >> 10,
    }


class MemoryReporter:
    """Writes a report on each SIGUSR2 (installed only in the main thread)."""

    def __init__(self, app, folder: Path):
        self.app = app
        self.folder = folder
        self.count = 0
        self._lock = threading.Lock()

    def write(self) -> Path:
        with self._lock:
            self.count += 1
            base = self.folder / f"memory-{self.count}"
            gc.collect()
            snapshot = tracemalloc.take_snapshot() if tracemalloc.is_tracing() else None
            if snapshot is None:
                tracemalloc.start(FRAMES)
            current, peak = tracemalloc.get_traced_memory() if snapshot is not None else (0, 0)
            report = {
                "status_kib": proc_status(),
                "malloc_kib": malloc_stats(),
                "tracemalloc_kib": {"current": current >> 10, "peak": peak >> 10},
                "threads": threading.active_count(),
                "caches": cache_sizes(self.app),
                "objects": object_counts(),
                "torch": torch_figures(),
                "snapshot": f"{base.name}.tracemalloc" if snapshot is not None else None,
            }
            if snapshot is not None:
                snapshot.dump(str(base) + ".tracemalloc")
                # From the second report on: what malloc_trim(0) gives back, i.e. how much of RSS
                # was freed memory glibc kept (fragmentation) rather than live allocations.
                report["after_malloc_trim_kib"] = malloc_trim()
            path = base.with_suffix(".json")
            tmp = path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(report, indent=2))
            os.replace(tmp, path)  # the soak waits for the .json: it appears complete
            return path

    def _on_signal(self, signum, frame) -> None:
        self.write()


def install_from_env(app) -> Optional[MemoryReporter]:
    folder = os.environ.get(ENV)
    if not folder or threading.current_thread() is not threading.main_thread():
        return None
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    reporter = MemoryReporter(app, path)
    signal.signal(signal.SIGUSR2, reporter._on_signal)
    return reporter


def diff(a_path: str, b_path: str, top: int = 25) -> str:
    """What grew from report A to report B (their snapshots beside them)."""
    a, b = (json.loads(Path(p).read_text()) for p in (a_path, b_path))
    lines = []
    rss = b["status_kib"]["VmRSS"] - a["status_kib"]["VmRSS"]
    anon = b["status_kib"]["RssAnon"] - a["status_kib"]["RssAnon"]
    py = b["tracemalloc_kib"]["current"] - a["tracemalloc_kib"]["current"]  # A's is 0 when it started tracing
    lines.append(f"RSS {a['status_kib']['VmRSS'] >> 10} -> {b['status_kib']['VmRSS'] >> 10} MiB ({rss / 1024:+.1f})")
    lines.append(f"  anonymous {anon / 1024:+.1f} MiB, file {(rss - anon) / 1024:+.1f} MiB")
    lines.append(f"  Python heap (tracemalloc) {py / 1024:+.1f} MiB; not Python: {(anon - py) / 1024:+.1f} MiB")
    if b.get("after_malloc_trim_kib"):
        trimmed = b["status_kib"]["VmRSS"] - b["after_malloc_trim_kib"]["VmRSS"]
        lines.append(f"  malloc_trim(0) at B gave back {trimmed / 1024:.1f} MiB")
    if a.get("malloc_kib") and b.get("malloc_kib"):
        for key in a["malloc_kib"]:
            lines.append(f"  malloc {key}: {a['malloc_kib'][key] >> 10} -> {b['malloc_kib'][key] >> 10} MiB")
    lines.append(f"threads {a['threads']} -> {b['threads']}; caches {a['caches']} -> {b['caches']}")
    ta, tb = a.get("torch", {}), b.get("torch", {})
    if "tensors" in ta and "tensors" in tb:
        lines.append(
            f"torch tensors held by Python: {ta['tensors']} -> {tb['tensors']}, "
            f"{ta['tensor_kib'] / 1024:.1f} -> {tb['tensor_kib'] / 1024:.1f} MiB"
        )
    grown = {k: v - a["objects"].get(k, 0) for k, v in b["objects"].items() if v != a["objects"].get(k, 0)}
    lines.append("objects: " + ", ".join(f"{k} {d:+d}" for k, d in sorted(grown.items(), key=lambda kv: -abs(kv[1]))))
    if b.get("snapshot"):
        new = tracemalloc.Snapshot.load(str(Path(b_path).with_name(b["snapshot"])))
        if a.get("snapshot"):
            stats = new.compare_to(tracemalloc.Snapshot.load(str(Path(a_path).with_name(a["snapshot"]))), "traceback")
        else:  # A started the tracing: all of B's traces are growth
            stats = new.compare_to(tracemalloc.Snapshot([], new.traceback_limit), "traceback")
        lines.append(f"top {top} growing allocation sites (tracemalloc):")
        for stat in stats[:top]:
            frame = stat.traceback.format(limit=3, most_recent_first=True)
            lines.append(f"  {stat.size_diff / 1024:+9.1f} KiB {stat.count_diff:+6d} blocks  " + " <- ".join(frame))
    return "\n".join(lines)


if __name__ == "__main__":
    print(diff(sys.argv[1], sys.argv[2]))
