"""``--llm_linear``: the torch backend's bfloat16 linear layers prepacked for oneDNN on a CPU, the
same products as ``F.linear`` up to bfloat16 rounding, on by default where they apply."""

from __future__ import annotations

import pytest
import torch
from flashtts_core.errors import InvalidRequest
from flashtts_core.sampling import SamplingParams

torch_packed = pytest.importorskip("flashtts_backends.torch_packed")
if not torch_packed.can_pack("cpu", torch.bfloat16)[0]:
    pytest.skip(torch_packed.can_pack("cpu", torch.bfloat16)[1], allow_module_level=True)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("rows", [1, 3, 40])
def test_a_packed_linear_is_the_plain_one_up_to_bfloat16_rounding(bias, rows):
    torch.manual_seed(rows)
    linear = torch.nn.Linear(320, 200, bias=bias).to(torch.bfloat16)
    packed = torch_packed.PackedLinear(linear)
    x = torch.randn(2, rows, 320, dtype=torch.bfloat16)
    with torch.inference_mode():
        plain, fast = linear(x), packed(x)
        exact = torch.nn.functional.linear(
            x.float(), linear.weight.float(), None if linear.bias is None else linear.bias.float()
        )
    assert fast.shape == plain.shape and fast.dtype == torch.bfloat16
    peak = exact.abs().max()
    # bfloat16 keeps 8 bits: an output is within 2^-8 of itself; both are that close to float32.
    assert ((fast.float() - exact).abs().max() / peak).item() < 8e-3
    assert ((fast.float() - plain.float()).abs().max() / peak).item() < 8e-3


@pytest.mark.asyncio
async def test_auto_packs_a_bfloat16_llm_on_the_cpu_and_it_decodes_as_the_plain_one(tiny_llm_dir, make_config):
    from flashtts_backends.torch_backend import TorchBackend

    packed = await TorchBackend.create(make_config(tiny_llm_dir, torch_dtype="bfloat16"))
    plain = await TorchBackend.create(make_config(tiny_llm_dir, torch_dtype="bfloat16", llm_linear="plain"))
    try:
        layers = [m for m in packed.model.modules() if isinstance(m, torch_packed.PackedLinear)]
        assert len(layers) == 7 * packed.model.config.num_hidden_layers  # q k v o, gate up down
        assert not any(isinstance(m, torch_packed.PackedLinear) for m in plain.model.modules())
        assert isinstance(packed.model.get_output_embeddings(), torch.nn.Linear)  # the head stays as loaded

        ids = torch.tensor([[72, 101, 108, 108, 111, 44, 32, 119]])
        with torch.inference_mode():
            a = packed.model(ids).logits.float()
            b = plain.model(ids).logits.float()
        assert ((a - b).abs().max() / b.abs().max()).item() < 2e-2
        # Greedy decoding through the scheduler, prompt and steps: the same ids while the logits
        # stay apart by more than that rounding (random weights can tie closer; 8 steps do not here).
        params = SamplingParams(temperature=0.0, max_tokens=8, allowed_token_ids=tuple(range(300, 420)))
        fast = await packed.generate([72, 101, 108], params)
        slow = await plain.generate([72, 101, 108], params)
        assert fast.token_ids == slow.token_ids and len(fast.token_ids) == 8
    finally:
        await packed.close()
        await plain.close()


@pytest.mark.asyncio
async def test_what_is_not_packed(tiny_llm_dir, make_config):
    """float32 and int8 stay as they are under auto; asking for packed where it cannot apply is an error."""
    from flashtts_backends.torch_backend import TorchBackend
    from flashtts_backends.torch_quant import Int8Linear

    for changes, kind in (
        (dict(torch_dtype="float32"), torch.nn.Linear),
        (dict(torch_dtype="bfloat16", llm_quantization="int8"), Int8Linear),
    ):
        backend = await TorchBackend.create(make_config(tiny_llm_dir, **changes))
        try:
            attention = backend.model.get_decoder().layers[0].self_attn
            assert type(attention.q_proj) is kind
        finally:
            await backend.close()
    for changes, why in (
        (dict(torch_dtype="float32"), "not bfloat16"),
        (dict(torch_dtype="bfloat16", llm_quantization="int8"), "own kernel"),
    ):
        with pytest.raises(InvalidRequest, match=why) as error:
            await TorchBackend.create(make_config(tiny_llm_dir, llm_linear="packed", **changes))
        assert error.value.param == "llm_linear"


@pytest.mark.asyncio
async def test_a_bfloat16_checkpoint_is_not_kept_mapped_after_packing(tiny_llm_dir, make_config, tmp_path):
    """A checkpoint already in bfloat16 loads as views of its memory map; once the body is packed, the
    embeddings and head must not keep the whole file mapped (Orpheus 3B: RSS 11.5 -> 6.9 GB)."""
    import gc
    import shutil

    from flashtts_backends.torch_backend import TorchBackend
    from transformers import AutoModelForCausalLM

    folder = tmp_path / "bf16"
    shutil.copytree(tiny_llm_dir, folder)
    AutoModelForCausalLM.from_pretrained(str(tiny_llm_dir), dtype=torch.bfloat16).save_pretrained(str(folder))
    weights = str((folder / "model.safetensors").resolve())

    def mapped() -> bool:
        gc.collect()
        with open("/proc/self/maps") as maps:
            return weights in maps.read()

    backend = await TorchBackend.create(make_config(folder, torch_dtype="bfloat16"))
    try:
        assert any(isinstance(m, torch_packed.PackedLinear) for m in backend.model.modules())
        assert not mapped()
    finally:
        await backend.close()
