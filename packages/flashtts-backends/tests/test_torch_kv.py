"""The in-place batch KV cache gives the model exactly what transformers' DynamicCache gives it,
through several capacity doublings."""

from __future__ import annotations

import torch


def test_growing_cache_decodes_exactly_like_the_dynamic_cache(tiny_llm_dir):
    from flashtts_backends.torch_kv import GrowingLayer, growing_cache
    from transformers import AutoModelForCausalLM, DynamicCache

    model = AutoModelForCausalLM.from_pretrained(str(tiny_llm_dir), dtype=torch.float32).eval()
    torch.manual_seed(0)
    prompt = torch.randint(0, 500, (2, 7))
    with torch.inference_mode():
        dynamic = DynamicCache()
        first = model(input_ids=prompt, past_key_values=dynamic, use_cache=True)
        kv = [(layer.keys.clone(), layer.values.clone()) for layer in dynamic.layers]
        growing = growing_cache(kv, headroom=3)  # grows at steps 4, 10, 22, ...
        token = first.logits[:, -1:].argmax(-1)
        for step in range(40):
            a = model(input_ids=token, past_key_values=dynamic, use_cache=True).logits
            b = model(input_ids=token, past_key_values=growing, use_cache=True).logits
            assert torch.equal(a, b), step
            token = a[:, -1:].argmax(-1)
    layer = growing.layers[0]
    assert isinstance(layer, GrowingLayer) and growing.get_seq_length() == 7 + 40
    assert layer.keys.shape[2] == 47 and layer._k.shape[2] >= 47
    assert torch.equal(layer.keys, dynamic.layers[0].keys)
