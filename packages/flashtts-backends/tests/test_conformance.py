"""One suite every backend must pass, run against each backend installed here on the same tiny
f32 Qwen2. A backend whose library is missing is skipped with the one-line install hint."""

from __future__ import annotations

import asyncio

import pytest
import pytest_asyncio
from flashtts_core.sampling import SamplingParams

pytestmark = pytest.mark.asyncio(loop_scope="session")

# "torch:static-cache" is the torch backend with --cache_implementation static (generate() per sequence).
BACKENDS = ["torch", "torch:static-cache", "vllm", "llama-cpp", "mlx-lm", "sglang", "tensorrt-llm"]
PROMPT = [72, 101, 108, 108, 111, 300, 301, 302]
GREEDY = SamplingParams(temperature=0.0, max_tokens=40)
NEAR_TIE = 2e-3


@pytest.fixture(params=BACKENDS)
def backend_name(request) -> str:
    return request.param


@pytest_asyncio.fixture(loop_scope="session")
async def backend(backends, backend_name):
    return await backends(backend_name)


async def collect(backend, prompt, params) -> list[list[int]]:
    return [delta async for delta in backend.stream(prompt, params)]


async def test_max_tokens(backend):
    out = await backend.generate(PROMPT, SamplingParams(temperature=1.0, top_k=0, top_p=1.0, max_tokens=7, seed=1))
    assert len(out.token_ids) == 7
    assert out.finish_reason == "length"


async def test_stop_ids_end_the_sequence_and_are_not_returned(backend):
    greedy = (await backend.generate(PROMPT, GREEDY)).token_ids
    assert len(greedy) == GREEDY.max_tokens
    stop = greedy[12]
    cut = greedy.index(stop)
    out = await backend.generate(PROMPT, SamplingParams(temperature=0.0, max_tokens=40, stop_token_ids=(stop,)))
    assert out.token_ids == greedy[:cut]
    assert out.finish_reason == "stop"


async def test_seed_reproducible(backend):
    params = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, max_tokens=24, seed=1234)
    first = (await backend.generate(PROMPT, params)).token_ids
    again = (await backend.generate(PROMPT, params)).token_ids
    other = (
        await backend.generate(PROMPT, SamplingParams(temperature=1.0, top_k=0, top_p=1.0, max_tokens=24, seed=99))
    ).token_ids
    assert first == again
    assert first != other


async def test_greedy_matches_torch(backend, backends, backend_name):
    """Greedy ids equal transformers' argmax at every step, teacher-forced on the backend's own
    output. Float32 kernels differ by ~1e-4 in the logits, so where torch's two best tokens are
    closer than ``NEAR_TIE`` either pick is right; anything else (a wrong RoPE, a lost bias, a
    shifted position) shows up as a large gap within a few tokens."""
    import torch

    reference = await backends("torch")
    ids = (await backend.generate(PROMPT, GREEDY)).token_ids
    assert len(ids) == GREEDY.max_tokens
    with torch.inference_mode():
        logits = reference.model(torch.tensor([PROMPT + ids])).logits[0, len(PROMPT) - 1 : -1]
    best = logits.max(dim=-1).values
    chosen = logits[torch.arange(len(ids)), torch.tensor(ids)]
    assert torch.all(best - chosen <= NEAR_TIE), (backend_name, (best - chosen).tolist())


async def test_stream_deltas_concatenate_to_the_whole(backend):
    params = SamplingParams(temperature=0.9, top_k=40, top_p=0.9, max_tokens=30, seed=7)
    deltas = await collect(backend, PROMPT, params)
    assert all(deltas), "no empty deltas"
    assert len(deltas) > 1, "tokens arrive as they are made"
    streamed = [t for d in deltas for t in d]
    assert streamed == (await backend.generate(PROMPT, params)).token_ids


async def test_cancel_frees_the_slot(backend):
    stream = backend.stream(PROMPT, SamplingParams(temperature=1.0, max_tokens=400, seed=3))
    got = [await anext(stream), await anext(stream)]
    assert all(got)
    await stream.aclose()
    for _ in range(100):
        if backend.active == 0:
            break
        await asyncio.sleep(0.05)
    assert backend.active == 0
    assert len((await backend.generate(PROMPT, SamplingParams(temperature=0.0, max_tokens=5))).token_ids) == 5


async def test_cancelled_task_frees_the_slot(backend):
    started = asyncio.Event()

    async def consume():
        async for _ in backend.stream(PROMPT, SamplingParams(temperature=1.0, max_tokens=400, seed=4)):
            started.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(started.wait(), 60)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(100):
        if backend.active == 0:
            break
        await asyncio.sleep(0.05)
    assert backend.active == 0


async def test_sixteen_concurrent_requests_match_their_sequential_results(backend):
    # Prompts of different lengths, so batched rows really differ in length.
    prompts = [PROMPT[: 2 + i % 6] + [310 + i] * (i % 5) for i in range(16)]
    params = SamplingParams(temperature=0.0, max_tokens=16)
    alone = [(await backend.generate(p, params)).token_ids for p in prompts[:4]]
    together = await asyncio.gather(*(backend.generate(p, params) for p in prompts))
    assert all(len(out.token_ids) == 16 for out in together)
    assert [out.token_ids for out in together[:4]] == alone


async def test_sixteen_concurrent_seeded_requests_are_each_reproducible(backend):
    def params(i):
        return SamplingParams(temperature=1.0, top_k=0, top_p=1.0, max_tokens=12, seed=100 + i)

    together = await asyncio.gather(*(backend.generate(PROMPT, params(i)) for i in range(16)))
    alone = [(await backend.generate(PROMPT, params(i))).token_ids for i in (0, 5)]
    assert [together[0].token_ids, together[5].token_ids] == alone


async def test_allowed_token_ids_are_respected(backend):
    allowed = tuple(range(400, 420))
    stop = 257
    params = SamplingParams(
        temperature=1.5, top_k=0, top_p=1.0, max_tokens=40, seed=5, allowed_token_ids=allowed, stop_token_ids=(stop,)
    )
    out = await backend.generate(PROMPT, params)
    assert out.token_ids
    assert set(out.token_ids) <= set(allowed)
    greedy = await backend.generate(PROMPT, SamplingParams(temperature=0.0, max_tokens=20, allowed_token_ids=allowed))
    assert set(greedy.token_ids) <= set(allowed)


async def test_sampling_parameters_change_the_output(backend):
    base = dict(max_tokens=30, seed=11)
    greedy = (await backend.generate(PROMPT, SamplingParams(temperature=0.0, **base))).token_ids
    penalised = (
        await backend.generate(PROMPT, SamplingParams(temperature=0.0, repetition_penalty=2.0, **base))
    ).token_ids
    assert penalised != greedy
    top1 = (await backend.generate(PROMPT, SamplingParams(temperature=1.5, top_k=1, **base))).token_ids
    assert top1 == greedy, "top_k=1 is greedy"
    tiny_p = (await backend.generate(PROMPT, SamplingParams(temperature=1.5, top_k=0, top_p=1e-6, **base))).token_ids
    assert tiny_p == greedy, "a tiny top_p keeps only the most likely token"


async def test_a_prompt_longer_than_max_length_is_a_clear_4xx(backend):
    from flashtts_core.errors import InvalidRequest

    too_long = PROMPT * 5000  # 40,000 tokens: far past the test backends' max_length
    with pytest.raises(InvalidRequest, match="does not fit max_length") as refused:
        await collect(backend, too_long, GREEDY)
    assert refused.value.status == 400 and refused.value.param == "text"


async def test_compute_executor_runs_jobs_on_the_decode_thread_between_steps(backend):
    """A backend that decodes on a CPU thread of this process lends it to the engine's codec: jobs run
    there, between two decode steps of running sequences, which they leave unchanged."""
    import threading

    executor = backend.compute_executor
    if executor is None:
        pytest.skip("this backend lends no compute thread (not a CPU decode thread of this process)")
    loop = asyncio.get_running_loop()
    alone = await backend.generate(PROMPT, GREEDY)
    seen: list[tuple[str, int]] = []

    def job(i: int) -> int:
        seen.append((threading.current_thread().name, backend.active))
        return i * i

    generation = asyncio.ensure_future(backend.generate(PROMPT, GREEDY))
    results = []
    while not generation.done():
        results.append(await loop.run_in_executor(executor, job, len(results)))
    together = await generation
    assert together.token_ids == alone.token_ids
    assert results == [i * i for i in range(len(results))]
    assert {name for name, _ in seen} == {f"flashtts-{backend.name}-scheduler"}
    assert any(active for _, active in seen), "some job ran while the sequence was generating"

    def fails() -> None:
        raise ValueError("codec failed")

    with pytest.raises(ValueError, match="codec failed"):
        await loop.run_in_executor(executor, fails)
    assert (await backend.generate(PROMPT, GREEDY)).token_ids == alone.token_ids
