"""The torch backend's continuous batching: concurrent requests share forward passes."""

from __future__ import annotations

import asyncio
import time

import pytest
from flashtts_core.sampling import SamplingParams

pytestmark = pytest.mark.asyncio


async def test_eight_concurrent_requests_finish_much_sooner_than_eight_sequential(tiny_llm_dir, make_config):
    from flashtts_backends.torch_backend import TorchBackend

    backend = await TorchBackend.create(make_config(tiny_llm_dir, batch_size=8))
    try:
        params = [SamplingParams(temperature=1.0, max_tokens=48, seed=i) for i in range(8)]
        prompt = [72, 101, 108, 108, 111]
        await backend.generate(prompt, params[0])  # warm-up
        start = time.perf_counter()
        alone = [await backend.generate(prompt, p) for p in params]
        sequential = time.perf_counter() - start
        start = time.perf_counter()
        together = await asyncio.gather(*(backend.generate(prompt, p) for p in params))
        concurrent = time.perf_counter() - start
    finally:
        await backend.close()
    assert [o.token_ids for o in together] == [o.token_ids for o in alone], "batching changes no request's tokens"
    assert concurrent < 0.5 * sequential, f"8 concurrent {concurrent:.2f} s vs 8 sequential {sequential:.2f} s"


async def test_a_request_waits_for_a_slot_and_gets_it_when_another_is_cancelled(tiny_llm_dir, make_config):
    from flashtts_backends.torch_backend import TorchBackend

    backend = await TorchBackend.create(make_config(tiny_llm_dir, batch_size=1))
    try:
        long = backend.stream([72, 101], SamplingParams(temperature=1.0, max_tokens=400, seed=1))
        await anext(long)
        waiting = asyncio.create_task(backend.generate([72, 105], SamplingParams(temperature=0.0, max_tokens=4)))
        await asyncio.sleep(0.2)
        assert not waiting.done(), "only one slot: the second request waits"
        await long.aclose()
        out = await asyncio.wait_for(waiting, 30)
        assert len(out.token_ids) == 4
        assert backend.active == 0
    finally:
        await backend.close()


async def test_compute_thread_is_lent_on_cpu_unless_separate(tiny_llm_dir, make_config):
    from flashtts_backends.torch_backend import TorchBackend

    shared = await TorchBackend.create(make_config(tiny_llm_dir))
    separate = await TorchBackend.create(make_config(tiny_llm_dir, cpu_compute_thread="separate"))
    try:
        assert shared.compute_executor is not None and separate.compute_executor is None
        # an engine's work on a CPU goes to that thread; on a GPU, and with `separate`, to its own threads
        assert shared.executor_for("cpu") is shared.compute_executor
        assert shared.executor_for("cuda:0") is None and separate.executor_for("cpu") is None
        assert await asyncio.wrap_future(shared.compute_executor.submit(sum, [1, 2])) == 3
    finally:
        await separate.close()
        await shared.close()
    with pytest.raises(RuntimeError, match="closed"):
        shared.compute_executor.submit(sum, [1])
