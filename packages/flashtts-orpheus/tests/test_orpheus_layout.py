"""The tiny model's on-disk layout, detection, languages and voices."""

import json

import pytest
from flashtts_core.errors import InvalidRequest
from flashtts_orpheus import frames
from flashtts_orpheus.engine import OrpheusEngine, lang_from_folder_name
from flashtts_orpheus.voices import VOICES, resolve_lang
from safetensors import safe_open


def test_tiny_model_has_the_released_layout(tiny_orpheus):
    config = json.loads((tiny_orpheus / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["vocab_size"] == 156940 and config["tie_word_embeddings"] is True
    assert (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]) == (128000, 128009, 128004)
    with safe_open(tiny_orpheus / "model.safetensors", "pt") as f:
        keys = set(f.keys())
        assert f.get_slice("model.embed_tokens.weight").get_shape() == [156940, 128]
    assert "lm_head.weight" not in keys  # tied, as the release
    assert {
        "model.norm.weight",
        "model.layers.1.mlp.down_proj.weight",
        "model.layers.0.self_attn.q_proj.weight",
    } <= keys
    assert (tiny_orpheus / "snac" / "config.json").is_file() and (tiny_orpheus / "snac" / "pytorch_model.bin").is_file()


def test_tiny_tokenizer_ids_line_up_with_the_release(tiny_orpheus):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_orpheus))
    assert len(tok) == 156940
    expected = {
        "<|begin_of_text|>": 128000,
        "<|eot_id|>": 128009,
        "<custom_token_1>": frames.START_OF_SPEECH,
        "<custom_token_2>": frames.END_OF_SPEECH,
        "<custom_token_3>": frames.START_OF_HUMAN,
        "<custom_token_10>": frames.AUDIO_BASE,
        "<custom_token_28683>": 156939,
    }
    assert {t: tok.convert_tokens_to_ids(t) for t in expected} == expected
    assert tok.decode(tok.encode("tara: hi <laugh>", add_special_tokens=False)) == "tara: hi <laugh>"


def test_detect_recognises_an_orpheus_llm_folder_only(tiny_orpheus, tmp_path):
    assert OrpheusEngine.detect(tiny_orpheus)
    assert not OrpheusEngine.detect(tmp_path)
    llama = tmp_path / "llama"
    llama.mkdir()
    (llama / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "vocab_size": 128256}))
    assert not OrpheusEngine.detect(llama)
    qwen = tmp_path / "qwen"
    qwen.mkdir()
    (qwen / "config.json").write_text(json.dumps({"architectures": ["Qwen2ForCausalLM"], "vocab_size": 166000}))
    assert not OrpheusEngine.detect(qwen)
    (qwen / "config.json").write_text("{not json")
    assert not OrpheusEngine.detect(qwen)


def test_languages_and_their_voices():
    assert resolve_lang(None) == "english"
    assert VOICES["english"] == ("tara", "leah", "jess", "leo", "dan", "mia", "zac", "zoe")
    assert resolve_lang("FR") == "french" and VOICES["french"] == ("pierre", "amelie", "marie")
    assert resolve_lang("zh") == "mandarin" and resolve_lang("es_it") == "spanish_italian"
    assert set(VOICES["spanish_italian"]) == set(VOICES["spanish"]) | set(VOICES["italian"])
    with pytest.raises(InvalidRequest, match="unknown Orpheus language 'klingon'"):
        resolve_lang("klingon")


@pytest.mark.parametrize(
    "folder, lang",
    [
        ("3b-fr-ft-research_release", "french"),
        ("3b-es_it-ft-research_release", "spanish_italian"),
        ("orpheus-3b-0.1-ft", None),
        ("3b-zh-ft-research_release", "mandarin"),
        ("hidden-model", None),
    ],
)
def test_language_from_a_multilingual_release_folder_name(tmp_path, folder, lang):
    assert lang_from_folder_name(tmp_path / folder) == lang
