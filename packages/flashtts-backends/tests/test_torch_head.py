"""The torch backend's output head over allowed rows only gives the same tokens as the full head."""

from __future__ import annotations

import asyncio

import pytest
from flashtts_core.sampling import SamplingParams

pytestmark = pytest.mark.asyncio


async def test_greedy_ids_identical_with_and_without_the_head_restriction(tiny_llm_dir, make_config):
    from flashtts_backends.torch_backend import TorchBackend

    loaded = await TorchBackend.create(make_config(tiny_llm_dir, batch_size=8))
    full = TorchBackend(loaded.model, loaded.config, "cpu", restrict_head=False)
    assert loaded._scheduler.head.restricted and not full._scheduler.head.restricted
    # Phases with different allowed sets (and one unrestricted row) decoding in one batch.
    sets = [tuple(range(300, 420)), tuple(range(0, 512, 3)), None, tuple(range(300, 420)) + (5,)]
    params = [
        SamplingParams(temperature=0.0, max_tokens=40, allowed_token_ids=allowed, stop_token_ids=(5,))
        for allowed in sets
    ]
    prompts = [[72, 101, 108], [72, 105], [40, 41, 42, 43], [99]]
    try:
        for backend in (loaded, full):
            await backend.generate([1, 2], params[0])  # warm-up
        restricted = await asyncio.gather(*(loaded.generate(p, s) for p, s in zip(prompts, params)))
        reference = await asyncio.gather(*(full.generate(p, s) for p, s in zip(prompts, params)))
        alone = [await loaded.generate(p, s) for p, s in zip(prompts, params)]
    finally:
        await full.close()
        await loaded.close()
    assert [o.token_ids for o in restricted] == [o.token_ids for o in reference]
    assert [o.token_ids for o in alone] == [o.token_ids for o in reference]
    for out, allowed in zip(reference, sets):
        assert len(out.token_ids) > 0
        if allowed is not None:
            assert set(out.token_ids) <= set(allowed)
    # One cached sub-matrix per distinct candidate set (allowed ids plus stop ids: rows 0 and 3 share one).
    assert len(loaded._scheduler.head._sets) == 2


async def test_seeded_sampling_identical_with_and_without_the_head_restriction(tiny_llm_dir, make_config):
    from flashtts_backends.torch_backend import TorchBackend

    loaded = await TorchBackend.create(make_config(tiny_llm_dir, batch_size=4))
    full = TorchBackend(loaded.model, loaded.config, "cpu", restrict_head=False)
    params = SamplingParams(
        temperature=0.8,
        top_k=50,
        top_p=0.95,
        repetition_penalty=1.1,
        max_tokens=40,
        allowed_token_ids=tuple(range(256, 500)),
        seed=7,
    )
    try:
        a = await loaded.generate([72, 101], params)
        b = await full.generate([72, 101], params)
    finally:
        await full.close()
        await loaded.close()
    assert a.token_ids == b.token_ids
