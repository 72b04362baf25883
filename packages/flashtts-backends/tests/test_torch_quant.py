"""``--llm_quantization int8`` on the torch backend: weight-only int8 linear layers, close to the
float model, and the output-head restriction still changes no token."""

from __future__ import annotations

import asyncio

import pytest
import torch
from flashtts_core.errors import InvalidRequest
from flashtts_core.options import EngineOptions, refuse_unread_options
from flashtts_core.plugins import get_plugin_manager
from flashtts_core.sampling import SamplingParams


def test_an_int8_linear_is_within_a_percent_of_the_float_one():
    from flashtts_backends.torch_quant import Int8Linear

    torch.manual_seed(0)
    for bias in (False, True):
        linear = torch.nn.Linear(256, 384, bias=bias)
        q = Int8Linear(linear)
        assert q.weight_int8.dtype == torch.int8 and q.scale.shape == (384,)
        x = torch.randn(3, 5, 256)
        with torch.inference_mode():
            exact, approx = linear(x), q(x)
        assert approx.shape == exact.shape and approx.dtype == exact.dtype
        assert ((approx - exact).abs().max() / exact.abs().max()).item() < 1e-2
        # The stored weight is the float one to half a quantization step per channel.
        step = q.scale.float()[:, None]
        assert ((q.dequantized() - linear.weight).abs() <= step * 0.5 + 1e-6).all()


def test_a_prompts_rows_agree_with_the_decode_kernel():
    """A call of DEQUANTIZE_ROWS rows or more (a prompt) multiplies by the dequantized weight; each
    row's output is the decode kernel's for that row, up to bfloat16 rounding."""
    from flashtts_backends.torch_quant import DEQUANTIZE_ROWS, Int8Linear

    torch.manual_seed(1)
    linear = torch.nn.Linear(320, 200, bias=True).to(torch.bfloat16)
    q = Int8Linear(linear)
    x = torch.randn(1, DEQUANTIZE_ROWS + 3, 320, dtype=torch.bfloat16)
    with torch.inference_mode():
        prompt = q(x)[0].float()
        rows = torch.cat([q(x[:, i : i + 1])[0] for i in range(x.shape[1])]).float()  # one row a call: the kernel
        exact = torch.nn.functional.linear(x[0].float(), q.dequantized(), linear.bias.float())
    peak = exact.abs().max()
    assert ((prompt - rows).abs().max() / peak).item() < 1e-2
    assert ((prompt - exact).abs().max() / peak).item() < 1e-2
    assert ((rows - exact).abs().max() / peak).item() < 1e-2


@pytest.mark.asyncio
async def test_int8_model_generates_close_to_float_and_the_head_restriction_changes_nothing(tiny_llm_dir, make_config):
    from flashtts_backends.torch_backend import TorchBackend
    from flashtts_backends.torch_quant import Int8Linear

    quantized = await TorchBackend.create(make_config(tiny_llm_dir, batch_size=4, llm_quantization="int8"))
    plain = await TorchBackend.create(make_config(tiny_llm_dir, batch_size=4))
    full = TorchBackend(quantized.model, quantized.config, "cpu", restrict_head=False)
    layers = [m for m in quantized.model.modules() if isinstance(m, Int8Linear)]
    assert len(layers) == 7 * quantized.model.config.num_hidden_layers  # q k v o, gate up down
    assert isinstance(quantized.model.get_output_embeddings(), torch.nn.Linear)  # the head stays as loaded

    ids = torch.tensor([[72, 101, 108, 108, 111]])
    with torch.inference_mode():
        a = quantized.model(ids).logits
        b = plain.model(ids).logits
    assert ((a - b).abs().max() / b.abs().max()).item() < 5e-2

    params = [
        SamplingParams(temperature=0.0, max_tokens=30, allowed_token_ids=allowed, stop_token_ids=(5,))
        for allowed in (tuple(range(300, 420)), None)
    ]
    prompts = [[72, 101, 108], [40, 41, 42]]
    try:
        restricted = await asyncio.gather(*(quantized.generate(p, s) for p, s in zip(prompts, params)))
        reference = await asyncio.gather(*(full.generate(p, s) for p, s in zip(prompts, params)))
    finally:
        await full.close()
        await quantized.close()
        await plain.close()
    assert [o.token_ids for o in restricted] == [o.token_ids for o in reference]
    assert all(len(o.token_ids) > 0 for o in restricted)


def test_the_flag_is_the_torch_backends_and_the_others_refuse_it():
    """``--llm_quantization`` is declared by the torch backend (flashtts_backends.options), not core;
    any other backend refuses it rather than load an unquantized model."""
    from flashtts_backends.options import TorchOptions

    pm = get_plugin_manager()
    assert "llm_quantization" not in EngineOptions.model_fields
    assert pm.options["torch"] is TorchOptions and "llm_quantization" in TorchOptions.fields_in("server")
    options = EngineOptions(llm_quantization="int8")
    pm.check_options(options, "spark", "torch")
    assert TorchOptions.of(options).llm_quantization == "int8"
    for name in ("llama-cpp", "vllm", "sglang", "mlx-lm", "tensorrt-llm"):
        with pytest.raises(InvalidRequest) as caught:
            # What PluginManager.check_options runs once the backend is known to be installed.
            refuse_unread_options(pm.options.values(), options, "spark", name)
        assert caught.value.param == "llm_quantization"
        assert caught.value.message.startswith(f"backend {name!r} does not quantize the LLM itself")
        assert "torch" in caught.value.message
        # Unset, the flag is nobody's business.
        refuse_unread_options(pm.options.values(), EngineOptions(), "spark", name)
    if pm.backend_status().get("llama-cpp", "not registered") is None:  # installed here: the whole check
        with pytest.raises(InvalidRequest, match="does not quantize"):
            pm.check_options(options, "spark", "llama-cpp")
    with pytest.raises(InvalidRequest) as caught:
        TorchOptions.of(EngineOptions(llm_quantization="int4"))
    assert caught.value.param == "llm_quantization"
