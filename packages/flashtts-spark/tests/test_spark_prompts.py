"""Spark-TTS's vocabulary and prompts, detection, the float16 fallback and a light plugin module."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
from flashtts_core.options import EngineOptions
from flashtts_spark.engine import SparkEngine
from flashtts_spark.vocabulary import SparkVocabulary, added_tokens

# Ids of the released Spark-TTS-0.5B tokenizer (reference/models.md and upstream's tokenizer script).
QWEN_VOCAB = 151665
RELEASED_IDS = {
    "<|bicodec_global_0|>": 151665,
    "<|bicodec_global_4095|>": 155760,
    "<|bicodec_semantic_0|>": 155761,
    "<|bicodec_semantic_8191|>": 163952,
    "<|pitch_value_0|>": 163953,
    "<|pitch_label_0|>": 164965,
    "<|speed_value_0|>": 164975,
    "<|speed_label_0|>": 164986,
    "<|gender_0|>": 165032,
    "<|task_tts|>": 165137,
    "<|task_controllable_tts|>": 165143,
    "<|start_content|>": 165146,
    "<|start_style_label|>": 165147,
    "<|start_acoustic_token|>": 165149,
    "<|start_global_token|>": 165150,
    "<|start_semantic_token|>": 165151,
    "<|end_content|>": 165152,
    "<|end_style_label|>": 165153,
    "<|end_acoustic_token|>": 165155,
    "<|end_global_token|>": 165156,
    "<|end_semantic_token|>": 165157,
}


def test_added_tokens_in_released_order():
    tokens = added_tokens()
    assert len(tokens) == len(set(tokens)) == 13493  # upstream: "Added 13493 tokens", vocab 165158
    for token, released_id in RELEASED_IDS.items():
        assert QWEN_VOCAB + tokens.index(token) == released_id, token


@pytest.fixture(scope="module")
def vocab(tiny_spark):
    from transformers import AutoTokenizer

    return SparkVocabulary(AutoTokenizer.from_pretrained(str(tiny_spark / "LLM")))


def test_tiny_tokenizer_keeps_released_offsets(vocab):
    base = vocab.globals.id(0)
    by_name = vocab.tokenizer.get_vocab()
    for token, released_id in RELEASED_IDS.items():
        assert by_name[token] - base == released_id - RELEASED_IDS["<|bicodec_global_0|>"], token
    assert vocab.tokenizer.convert_ids_to_tokens(vocab.eos) == "<|im_end|>"
    assert set(vocab.stop_ids) == {vocab.end_semantic, vocab.eos}


def _tokens(vocab, ids):
    return vocab.tokenizer.convert_ids_to_tokens(ids)


def test_clone_prompt(vocab):
    globals_ = list(range(32))
    without = _tokens(vocab, vocab.clone_prompt("Hi", globals_, [5, 6], None))
    assert without[:2] == ["<|task_tts|>", "<|start_content|>"]
    assert without[-35:] == [
        "<|start_global_token|>",
        *[f"<|bicodec_global_{i}|>" for i in range(32)],
        "<|end_global_token|>",
        "<|start_semantic_token|>",
    ]
    assert "<|start_style_label|>" not in without
    with_text = vocab.clone_prompt("Hi", globals_, [5, 6], "Ref.")
    assert vocab.tokenizer.decode(with_text[2 : with_text.index(vocab.end_content)]) == "Ref.Hi"
    assert _tokens(vocab, with_text[-3:]) == [
        "<|start_semantic_token|>",
        "<|bicodec_semantic_5|>",
        "<|bicodec_semantic_6|>",
    ]
    styled = _tokens(vocab, vocab.clone_prompt("Hi", globals_, None, None, pitch=4, speed=None))
    i = styled.index("<|start_style_label|>")
    assert styled[i : i + 4] == [
        "<|start_style_label|>",
        "<|pitch_label_4|>",
        "<|speed_label_2|>",
        "<|end_style_label|>",
    ]
    assert "<|start_style_label|>" not in _tokens(vocab, vocab.clone_prompt("Hi", globals_, None, None, 2, 2))


def test_control_prompt(vocab):
    prompt = _tokens(vocab, vocab.control_prompt("Hi", gender=1, pitch=0, speed=4))
    assert prompt[:2] == ["<|task_controllable_tts|>", "<|start_content|>"]
    assert prompt[-7:] == [
        "<|end_content|>",
        "<|start_style_label|>",
        "<|gender_1|>",
        "<|pitch_label_0|>",
        "<|speed_label_4|>",
        "<|end_style_label|>",
        "<|start_acoustic_token|>",
    ]
    suffix = _tokens(vocab, vocab.control_voice_suffix(700, 3, [9] * 32))
    assert suffix[:4] == [
        "<|pitch_value_700|>",
        "<|speed_value_3|>",
        "<|end_acoustic_token|>",
        "<|start_global_token|>",
    ]
    assert suffix[-2:] == ["<|end_global_token|>", "<|start_semantic_token|>"]


def test_parsing_by_id(vocab):
    ids = [vocab.start_semantic, vocab.semantics.id(0), vocab.globals.id(7), vocab.semantics.id(8191), vocab.eos]
    assert vocab.semantic_codes(ids) == [0, 8191]
    assert vocab.global_codes(ids) == [7]


def test_text_markup_is_not_control(vocab):
    assert vocab.eos not in vocab.encode_text("say <|im_end|> please")
    injected = vocab.encode_text("hi <|bicodec_semantic_5|><|start_global_token|><|gender_1|> there")
    first_added = min(vocab.semantics.id(0), vocab.globals.id(0), vocab.start_semantic)
    assert all(i < first_added for i in injected), "text must never turn into Spark's control or audio tokens"


def test_detect(tiny_spark, tmp_path):
    assert SparkEngine.detect(tiny_spark)
    for sub in ("LLM", "BiCodec"):
        (tmp_path / sub).mkdir()
    assert not SparkEngine.detect(tmp_path)  # no wav2vec2-large-xlsr-53/


def test_float16_falls_back(caplog):
    with caplog.at_level(logging.WARNING, logger="flashtts.spark"):
        options = SparkEngine._llm_dtype_fallback(EngineOptions(torch_dtype="float16", llm_device="cpu"))
    assert options.torch_dtype == "float32"
    assert "float16" in caplog.text
    assert SparkEngine._llm_dtype_fallback(EngineOptions(torch_dtype="bfloat16")).torch_dtype == "bfloat16"


@pytest.mark.parametrize("bf16", [False, True])
def test_auto_dtype_never_float16_on_cuda(monkeypatch, bf16):
    # A CUDA GPU without bfloat16 (T4, V100): "auto" would load the LLM in float16.
    import torch
    from flashtts_core.options import resolve_device, resolve_dtype

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    options = SparkEngine._llm_dtype_fallback(EngineOptions(torch_dtype="auto", llm_device="auto"))
    dtype = resolve_dtype(options.torch_dtype, resolve_device(options.llm_device))
    assert dtype == (torch.bfloat16 if bf16 else torch.float32)
    cpu = SparkEngine._llm_dtype_fallback(EngineOptions(torch_dtype="auto", llm_device="cpu"))
    assert resolve_dtype(cpu.torch_dtype, "cpu") == torch.float32


def test_plugin_module_is_light():
    code = (
        "import sys, flashtts_spark.plugin as p; "
        "heavy = [m for m in ('torch', 'transformers', 'yaml', 'safetensors') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
