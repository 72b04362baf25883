"""The llama-cpp backend: concurrent requests share decode steps, and q8_0 GGUFs load and decode."""

from __future__ import annotations

import asyncio

import pytest
from flashtts_core.sampling import SamplingParams

pytestmark = pytest.mark.asyncio

pytest.importorskip("llama_cpp")


async def test_eight_concurrent_requests_share_decode_steps(tiny_gguf, make_config):
    from flashtts_backends.llama_cpp_backend import LlamaCppBackend

    # Room for all eight at once (each is admitted only if its prompt + max_tokens cells fit).
    backend = await LlamaCppBackend.create(make_config(tiny_gguf, batch_size=8, max_length=1024))
    try:
        # Greedy: llama.cpp's kernels are not batch-invariant (the last bits of a logit depend on how
        # many rows a matmul has), so a long sampled sequence may fork once a draw lands on a boundary.
        params = [SamplingParams(temperature=0.0, max_tokens=64) for i in range(8)]
        prompts = [[72, 101, 108, 108, 111][: 2 + i % 4] for i in range(8)]
        await backend.generate(prompts[0], params[0])  # warm-up
        steps = backend._scheduler.steps
        alone = [await backend.generate(p, s) for p, s in zip(prompts, params)]
        sequential, steps = backend._scheduler.steps - steps, backend._scheduler.steps
        together = await asyncio.gather(*(backend.generate(p, s) for p, s in zip(prompts, params)))
        concurrent = backend._scheduler.steps - steps
        assert backend.active == 0
    finally:
        await backend.close()
    assert [o.token_ids for o in together] == [o.token_ids for o in alone], "batching changes no request's tokens"
    # Alone: one decode step per token of each request; together, all eight rows share each step.
    assert sequential == 8 * 63
    assert concurrent <= 63 + 8, f"8 concurrent requests took {concurrent} decode steps"


async def test_more_requests_than_sequence_ids_wait_for_a_slot(tiny_gguf, make_config):
    from flashtts_backends.llama_cpp_backend import LlamaCppBackend

    backend = await LlamaCppBackend.create(make_config(tiny_gguf, batch_size=2))
    try:
        params = SamplingParams(temperature=0.0, max_tokens=12)
        alone = (await backend.generate([72, 101], params)).token_ids
        outs = await asyncio.gather(*(backend.generate([72, 101], params) for _ in range(5)))
    finally:
        await backend.close()
    assert all(o.token_ids == alone for o in outs)


async def test_q8_0_gguf_loads_and_decodes_greedy_like_f32(tiny_llm_dir, tiny_gguf, make_config, tmp_path):
    from flashtts_backends.gguf_convert import convert_to_gguf
    from flashtts_backends.llama_cpp_backend import LlamaCppBackend

    q8 = convert_to_gguf(tiny_llm_dir, outtype="q8_0", outfile=tmp_path / "tiny-q8_0.gguf")
    params = SamplingParams(temperature=0.0, max_tokens=24)
    outs = []
    for path in (q8, tiny_gguf):
        backend = await LlamaCppBackend.create(make_config(path, batch_size=2))
        try:
            outs.append((await backend.generate([72, 101, 108], params)).token_ids)
        finally:
            await backend.close()
    assert len(outs[0]) == 24
    # int8 weights move the logits a little: the first tokens agree, later ones may drift.
    assert outs[0][:4] == outs[1][:4]
