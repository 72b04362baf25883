"""Codecs are never built while an LLM load has changed torch's process-wide default dtype.

transformers' from_pretrained sets the default dtype to the LLM's (bfloat16) while it builds the
model; engines load codecs in other threads at the same time. These tests hold the build lock
with the default dtype switched to bfloat16, as that window does, and check that each loader waits
for it and then builds float32 modules.
"""

from __future__ import annotations

import threading
import time

import torch
from flashtts_core.loading import MODULE_BUILD_LOCK


def _load_during_a_bf16_window(load):
    """Run ``load`` in a thread while this one holds the lock with bfloat16 as the default."""
    out = {}
    with MODULE_BUILD_LOCK:
        torch.set_default_dtype(torch.bfloat16)
        try:
            worker = threading.Thread(target=lambda: out.update(model=load()))
            worker.start()
            time.sleep(0.5)
            assert worker.is_alive(), "the loader built its modules without waiting for the build lock"
        finally:
            torch.set_default_dtype(torch.float32)
    worker.join(timeout=120)
    assert not worker.is_alive()
    return out["model"]


def _dtypes(module) -> set:
    return {t.dtype for t in [*module.parameters(), *module.buffers()] if t.is_floating_point()}


def test_bicodec_and_wav2vec2_wait_for_the_lock_and_stay_float32(tiny_spark):
    from flashtts_spark.bicodec.codec_api import BiCodecTokenizer

    tokenizer = _load_during_a_bf16_window(lambda: BiCodecTokenizer.load(tiny_spark, device="cpu"))
    assert _dtypes(tokenizer.model) == {torch.float32}
    assert _dtypes(tokenizer.features) == {torch.float32}


def test_snac_waits_for_the_lock_and_stays_float32(tiny_orpheus):
    from flashtts_orpheus.snac_codec import SnacCodec

    codec = _load_during_a_bf16_window(lambda: SnacCodec.load(tiny_orpheus / "snac", device="cpu"))
    assert _dtypes(codec.model) == {torch.float32}


def test_the_torch_backend_builds_its_llm_inside_the_lock(tiny_spark):
    from flashtts_backends.torch_backend import TorchBackend
    from flashtts_core.backend import BackendConfig

    config = BackendConfig(model_path=tiny_spark / "LLM", device="cpu", torch_dtype="float32", batch_size=1)
    backend = _load_during_a_bf16_window(lambda: TorchBackend._load(config))
    try:
        assert _dtypes(backend.model) == {torch.float32}
    finally:
        backend._scheduler.close()
