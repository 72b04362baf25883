"""The llama-cpp backend: concurrent requests share decode steps, and q8_0 GGUFs load and decode."""

from __future__ import annotations

import asyncio
from pathlib import Path

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


# The tiny model's ids 256.. are added tokens; a "phase" of them plus EOS is what the engine emits.
KEPT = tuple(range(300, 420))


def reduced_params(**changes):
    values = dict(temperature=0.0, max_tokens=40, allowed_token_ids=KEPT[:100], stop_token_ids=(KEPT[-1],))
    values.update(changes)
    return SamplingParams(**values)


@pytest.mark.parametrize("outtype", ["f32", "q8_0", "untied"])
async def test_reduced_head_gives_the_full_models_ids(tiny_llm_dir, make_config, tmp_path, outtype):
    """The output head over the engine's rows only: same greedy and seeded ids as the full model, alone
    and batched; prompts of tokens outside the kept rows go in as embeddings. ``untied``: a model with
    its own output.weight (both vocabulary tensors are cut)."""
    import shutil

    from flashtts_backends.gguf_convert import convert_to_gguf
    from flashtts_backends.llama_cpp_backend import LlamaCppBackend

    source = tiny_llm_dir
    if outtype == "untied":
        from flashtts_core.tiny_llm import write_tiny_llm
        from transformers import AutoConfig

        source = Path(shutil.copytree(tiny_llm_dir, tmp_path / "untied"))
        tiny = AutoConfig.from_pretrained(str(tiny_llm_dir))
        write_tiny_llm(
            source,
            vocab_size=tiny.vocab_size,
            hidden_size=tiny.hidden_size,
            num_layers=tiny.num_hidden_layers,
            eos_token_id=tiny.eos_token_id,
            tie_word_embeddings=False,
            seed=1,
        )
    kind = "f32" if outtype == "untied" else outtype
    gguf = convert_to_gguf(source, outtype=kind, outfile=tmp_path / f"tiny-{outtype}.gguf")
    if outtype == "untied":
        from flashtts_backends.gguf_reduce import read_gguf

        assert any(t.name == "output.weight" for t in read_gguf(gguf).tensors)
    # Text bytes (never kept rows), then kept ids already generated, then one shared with a cached prefix.
    prompts = [[72, 101, 108, 108, 111], [72, 101, 108, 108, 111, 305, 310], [80, 300], [72, 101, 108, 33]]
    requests = [
        reduced_params(),
        reduced_params(temperature=0.9, top_k=20, top_p=0.9, repetition_penalty=1.3, seed=7),
        reduced_params(min_tokens=5, seed=3, temperature=1.0),
        reduced_params(allowed_token_ids=KEPT[50:], stop_token_ids=()),
    ]
    outs = {}
    for head in ("full", "reduced"):
        config = make_config(gguf, batch_size=4, llm_gguf_head=head)
        config.output_token_ids = KEPT
        backend = await LlamaCppBackend.create(config)
        try:
            assert (backend.reduced is None) == (head == "full")
            alone = [(await backend.generate(p, r)).token_ids for p, r in zip(prompts, requests)]
            together = await asyncio.gather(*(backend.generate(p, r) for p, r in zip(prompts, requests)))
            outs[head] = alone, [o.token_ids for o in together]
        finally:
            await backend.close()
    assert outs["reduced"][0] == outs["full"][0]
    assert outs["reduced"][0][0][:4] == outs["full"][1][0][:4]  # batching forks late at most (see above)
    assert outs["reduced"][1][0] == outs["full"][1][0]
    assert all(len(ids) > 0 and set(ids) <= set(KEPT) for ids in outs["reduced"][0])
    # Written once beside the file, then reused.
    (written,) = (tmp_path / "reduced").glob(f"tiny-{outtype}.rows-{len(KEPT)}-*.gguf")
    assert written.stat().st_size < gguf.stat().st_size


async def test_reduced_head_refuses_requests_outside_its_rows(tiny_gguf, make_config):
    from flashtts_backends.llama_cpp_backend import LlamaCppBackend
    from flashtts_core.errors import InvalidRequest

    config = make_config(tiny_gguf, batch_size=2)
    config.output_token_ids = KEPT
    backend = await LlamaCppBackend.create(config)
    try:
        written = next((tiny_gguf.parent / "reduced").glob("*.gguf"))
        stamp = written.stat().st_mtime_ns
        for params in (
            SamplingParams(temperature=0.0, max_tokens=4),  # the whole vocabulary
            reduced_params(allowed_token_ids=(5, 300)),  # a text byte
            reduced_params(stop_token_ids=(7,)),
        ):
            with pytest.raises(InvalidRequest, match="--llm_gguf_head full"):
                await backend.generate([72, 101], params)
        assert len((await backend.generate([72, 101], reduced_params(max_tokens=3))).token_ids) == 3
        with pytest.raises(InvalidRequest):
            await backend.generate([72, 600], reduced_params())  # prompt ids are checked against the full vocabulary
    finally:
        await backend.close()
    again = await LlamaCppBackend.create(config)
    await again.close()
    assert written.stat().st_mtime_ns == stamp, "the reduced file is reused"
