"""One thread drives the CPU after load: the loader threads leave, and Spark's codec runs on the torch
backend's decode thread (``--cpu_compute_thread shared``), or on its own with ``separate``."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import numpy as np
import pytest
import torch
from flashtts_core.request import SynthesisRequest
from flashtts_core.sampling import SamplingOverrides

pytestmark = pytest.mark.asyncio


def settings_for(model, tmp_path, **changes):
    from flashtts_server.settings import ServerSettings

    values = dict(
        model_path=model,
        backend="torch",
        llm_device="cpu",
        tokenizer_device="cpu",
        detokenizer_device="cpu",
        torch_dtype="float32",
        max_length=2048,
        role_dir=str(tmp_path / "roles"),
    )
    values.update(changes)
    return ServerSettings(**values)


async def loaded_app(settings):
    from flashtts_server.app import create_app

    app = create_app(settings)
    return app, app.router.lifespan_context(app)


@pytest.mark.parametrize("placement", ["shared", "separate"])
async def test_codec_runs_on_the_decode_thread_and_loaders_leave(tiny_spark, tmp_path, placement):
    app, lifespan = await loaded_app(settings_for(tiny_spark, tmp_path, cpu_compute_thread=placement))
    async with lifespan:
        engine = app.state.runtime.engine
        deadline = time.monotonic() + 10
        while any(t.name.startswith("flashtts-load") for t in threading.enumerate()):
            assert time.monotonic() < deadline, "the loader threads outlive the load"
            await asyncio.sleep(0.05)
        # Shared: Spark's codec batchers run on the backend's decode thread (the conformance suite checks
        # that jobs given to it run there, between steps); separate: on their own threads.
        shared = engine.backend.compute_executor
        if placement == "shared":
            assert shared is not None
            assert engine._detokenize._executor is shared and engine._tokenize._executor is shared
        else:
            assert shared is None and engine._detokenize._executor is not engine._tokenize._executor
        request = SynthesisRequest(text="Hi there.", voice="female", sampling=SamplingOverrides(max_tokens=40, seed=1))
        chunks = [c async for c in engine.synthesize(request)]
        assert sum(len(np.asarray(c)) for c in chunks) > 0


def os_threads() -> int:
    return len(os.listdir("/proc/self/task"))


def parallel_kernels() -> None:
    """An elementwise op big enough that torch runs it on an OpenMP team of the calling thread."""
    torch.ones(1 << 22).mul_(3)


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads in /proc")
async def test_only_the_decode_thread_keeps_an_openmp_team(tiny_spark, tmp_path):
    """The loop's thread and the default executor's threads keep no OpenMP team after the load, and
    the loop's thread raises none later (libgomp throttles every team while more threads than cores
    are in teams)."""
    from flashtts_core.openmp import release_team

    threads = torch.get_num_threads()
    torch.set_num_threads(3)  # a team of three (two workers), also on a machine with fewer cores
    try:
        if not release_team():
            pytest.skip("torch does not run its kernels on GNU OpenMP here")
        parallel_kernels()  # this (the loop's) thread now leads a team, as after an engine's load
        app, lifespan = await loaded_app(settings_for(tiny_spark, tmp_path))
        async with lifespan:
            before = os_threads()
            release_team()
            assert os_threads() == before, "the loop's thread still led an OpenMP team after the load"
            parallel_kernels()  # request-time work on the loop (a sampler's lookup table) stays serial
            assert os_threads() == before, "the loop's thread led an OpenMP team again after the load"
            await asyncio.to_thread(lambda: None)  # the executor has its thread
            before = os_threads()
            await asyncio.to_thread(parallel_kernels)
            assert os_threads() == before, "an executor thread kept its OpenMP team after its job"
    finally:
        torch.set_num_threads(threads)
