"""flashtts_core.openmp: a thread's OpenMP workers really leave, in a fresh process (its own libgomp state)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("torch")

# Every thread of the process, by its kernel id: a team's workers are threads of their own.
PROBE = textwrap.dedent(
    """
    import os, threading, torch
    from flashtts_core.openmp import TeamlessThreadPool, release_team, stay_teamless

    def tasks():
        return len(os.listdir("/proc/self/task"))

    def kernels():  # an elementwise op big enough for torch to run it in parallel
        torch.ones(1 << 22).mul_(3)

    torch.set_num_threads(3)
    before = tasks()
    kernels()
    with_team = tasks()
    released = release_team()
    after = tasks()
    kernels()  # the thread may lead a team again
    again = tasks()
    release_team()

    pool = TeamlessThreadPool(max_workers=1)
    pool.submit(lambda: None).result()
    idle_pool = tasks()
    pool.submit(kernels).result()
    after_job = tasks()
    pool.shutdown()

    idle = tasks()
    kernels()  # a team again, then this thread stays without one
    teamed = tasks()
    stay_teamless()
    stayed = tasks()
    kernels()
    serial = tasks()
    other = []  # another thread still raises its own team of three
    def count():
        start = tasks()
        kernels()
        other.append(tasks() - start)
        release_team()
    thread = threading.Thread(target=count)
    thread.start()
    thread.join()
    print(before, with_team, released, after, again, idle_pool, after_job, idle, teamed, stayed, serial, other[0])
    """
)


def test_release_team_ends_the_calling_threads_workers():
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    before, with_team, released, after, again, idle_pool, after_job, *rest = result.stdout.split()
    before, with_team, after, again, idle_pool, after_job = map(
        int, (before, with_team, after, again, idle_pool, after_job)
    )
    idle, teamed, stayed, serial, other = map(int, rest)
    if released != "True":
        pytest.skip("this torch does not run its kernels on GNU OpenMP (libgomp)")
    assert with_team == before + 2  # three threads in the team: this one and two workers
    assert after == before  # the workers left
    assert again == with_team  # and come back when the thread runs kernels again
    # A pool thread that ran kernels gave its team up when the job ended: only the pool's own thread remains.
    assert after_job == idle_pool
    # stay_teamless: the workers left, and this thread's kernels no longer bring them back...
    assert teamed == idle + 2
    assert stayed == idle
    assert serial == idle
    # ...while another thread's still run on a team of its own (the setting is per thread).
    assert other == 2


def test_release_team_without_libgomp_is_a_no_op():
    """In a process that never loaded an OpenMP runtime, nothing is loaded for it."""
    code = (
        "from flashtts_core.openmp import release_team; import sys\n"
        "maps = open('/proc/self/maps').read()\n"
        "print(release_team(), 'libgomp' in maps, 'libgomp' in open('/proc/self/maps').read())"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False", "False"]
