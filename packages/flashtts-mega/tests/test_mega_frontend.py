"""MegaTTS3's front end, G2P prompt/parsing and latent checks, without a server."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flashtts_core.errors import InvalidRequest, UnsupportedCapability
from flashtts_core.request import Level, SynthesisRequest, VoiceReference
from flashtts_mega import phones
from flashtts_mega.frontend import detect_language, normalize, prepare_text, split_segments
from flashtts_mega.g2p import G2P, MAX_NEW_TOKENS, token_budget
from flashtts_mega.reference import check_latent


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("Hi.", "en"),
        ("Hello there, how are you?", "en"),
        ("你好，世界。", "zh"),
        ("我是您的主持人，Elise Hugh。", "zh"),
        ("OK 好", "zh"),
        ("The word 好 means good.", "en"),
        ("1234", "en"),
    ],
)
def test_language_by_script(text, lang):
    assert detect_language(text) == lang


def test_normalisation_writes_numbers_out_in_both_languages():
    assert normalize("I have 25 cats.", "en") == "I have twenty five cats."
    assert "二十五" in normalize("我有25只猫。", "zh")
    assert normalize("  \u200b ", "en") == ""


def test_english_segments_are_at_most_130_bytes_and_cut_at_punctuation():
    sentence = "This sentence is here to be repeated, and it has a comma in the middle of it. "
    segments = split_segments((sentence * 6).strip(), "en")
    assert len(segments) > 1
    assert all(len(s.encode()) <= 130 for s in segments)
    assert all(s.endswith((".", ",")) for s in segments)
    words = split_segments(" ".join(["word"] * 80), "en")  # no punctuation: cut between words
    assert all(len(s.encode()) <= 130 for s in words) and " ".join(words) == " ".join(["word"] * 80)


def test_chinese_segments_are_about_60_han_characters_with_full_width_punctuation():
    text = "我们每天为您带来新思想，激发您的好奇心。" * 8
    segments = split_segments(text, "zh")
    assert len(segments) > 1
    assert all(len(s) <= 60 for s in segments)
    assert "".join(segments) == text
    assert split_segments("你好,世界.", "zh") == ["你好，世界。"]


def test_prepare_text_of_nothing_is_empty():
    assert prepare_text(" \n ")[1] == []


class _Tokenizer:
    """The part of a Hugging Face tokenizer G2P reads: a vocabulary with <Reserved_TTS_k> at 1000 + k."""

    def __init__(self, reserved: int = 1024):
        self.vocab = {f"<Reserved_TTS_{k}>": 1000 + k for k in range(reserved)}

    def get_vocab(self):
        return dict(self.vocab)

    def encode(self, text, add_special_tokens=False):
        return [self.vocab[text]] if text in self.vocab else [ord(c) for c in text]

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) for c in text]}


def test_g2p_prompt_sampling_and_parsing():
    g2p = G2P(_Tokenizer())
    assert g2p.start_id == 1000 + 145 and g2p.stop_id == 1000 + 801
    prompt = g2p.prompt("Hi <BOS>")
    assert prompt[-1] == g2p.start_id
    assert "".join(chr(i) for i in prompt[:-1]) == "<BOT>Hi < BOS><BOS>"  # typed markup stays text
    params = g2p.params("Hi.")
    assert params.temperature == 0 and params.stop_token_ids == (g2p.stop_id,)
    assert set(params.allowed_token_ids) == {1000 + t for t in phones.legal_phone_tokens()} | {g2p.stop_id}
    assert params.max_tokens == token_budget("Hi.") < 20
    assert g2p.params("x" * 1000).max_tokens == MAX_NEW_TOKENS
    assert g2p.params("Hi.", max_tokens=100).max_tokens == 100
    chinese = (50 - 3) * 6 + 200 + 2  # phone 50, second tone
    ph, tone = g2p.parse([1000 + 150, 1000 + chinese, g2p.stop_id, 1000 + 150])
    assert ph.tolist() == [[145, 150, 50]] and tone.tolist() == [[3, 3, 11]]
    with pytest.raises(RuntimeError, match="allowed_token_ids"):
        g2p.parse([5])


def test_g2p_refuses_a_tokenizer_without_the_reserved_tokens():
    with pytest.raises(Exception, match="Reserved_TTS_0"):
        G2P(_Tokenizer(reserved=0))
    with pytest.raises(Exception, match="801"):
        G2P(_Tokenizer(reserved=500))


@pytest.mark.parametrize(
    ("latent", "needed", "message"),
    [
        (None, None, "needs the reference's latent"),
        (np.zeros((1, 10, 32), np.int32), None, "floating-point"),
        (np.zeros((10, 32), np.float32), None, r"\[1, T, 32\]"),
        (np.zeros((1, 10, 16), np.float32), None, r"\[1, T, 32\]"),
        (np.zeros((2, 10, 32), np.float32), None, r"\[1, T, 32\]"),
        (np.full((1, 10, 32), np.nan, np.float32), None, "NaN"),
        (np.zeros((1, 10, 32), np.float32), 11, "has 10 frames but the reference audio needs 11"),
    ],
)
def test_bad_latents_are_400_naming_latent_file(latent, needed, message):
    with pytest.raises(InvalidRequest, match=message) as info:
        check_latent(latent, needed)
    assert info.value.status == 400 and info.value.param == "latent_file"


def test_a_latent_is_cut_to_the_aligned_length():
    latent = np.arange(1 * 12 * 32, dtype=np.float64).reshape(1, 12, 32)
    out = check_latent(latent, 10)
    assert out.shape == (1, 10, 32) and out.dtype == np.float32


def test_diffusion_fields_are_validated_and_refused_by_other_engines():
    from flashtts_mega.options import MegaOptions

    def mega(**fields):
        return SynthesisRequest(text="Hi.", voice="tara", options={"mega": fields})

    assert MegaOptions.of(None, mega(time_step=8, p_w=1.0)).time_step == 8
    assert MegaOptions.of(None, SynthesisRequest(text="Hi.")).time_step is None  # the engine's default
    with pytest.raises(InvalidRequest) as info:
        MegaOptions.of(None, mega(time_step=0))
    assert info.value.param == "time_step"
    with pytest.raises(InvalidRequest):
        MegaOptions.of(None, mega(p_w=float("nan")))
    from flashtts_orpheus.engine import OrpheusEngine

    engine = OrpheusEngine.__new__(OrpheusEngine)
    engine.voices = ["tara"]
    with pytest.raises(UnsupportedCapability) as info:
        engine.check_request(mega(t_w=1.0))
    assert info.value.param == "t_w" and "'mega'" in info.value.message


def test_mega_takes_speed_but_not_pitch():
    from flashtts_mega.pipeline import MegaPipeline

    engine = MegaPipeline.__new__(MegaPipeline)
    reference = VoiceReference(audio=np.zeros(10, np.float32), sample_rate=24000)
    engine.check_request(SynthesisRequest(text="Hi.", reference=reference, speed=Level.high))
    with pytest.raises(UnsupportedCapability) as info:
        engine.check_request(SynthesisRequest(text="Hi.", reference=reference, pitch=Level.high))
    assert info.value.param == "pitch" and "pitch control" in info.value.message


def test_dit_inputs_are_upstreams_cfg_triple():
    from flashtts_mega.alignment import ReferenceAlignment, length_regulate
    from flashtts_mega.pipeline import build_dit_inputs

    alignment = ReferenceAlignment(
        torch.tensor([[145, 50, 120]]), torch.tensor([[3, 11, 7]]), length_regulate(torch.tensor([[8, 8, 8]]))
    )
    latent = torch.randn(1, 6, 32)
    out = build_dit_inputs(
        alignment, latent, torch.tensor([[145, 130]]), torch.tensor([[3, 3]]), length_regulate(torch.tensor([[10, 14]]))
    )
    assert out["phone"].tolist() == [[145, 50, 120, 145, 130]] * 2 + [[phones.CFG_MASK_PHONE] * 5]
    assert out["tone"][0].tolist() == [3, 11, 3, 3, 3]  # non-Chinese tones become 3
    assert out["tone"][2].tolist() == [phones.CFG_MASK_TONE] * 5
    assert out["dur"].shape == (3, 48) and out["dur"][0, 24:].min() == 4  # segment phones after the reference's 3
    assert out["lat_ctx"].shape == (3, 12, 32) and torch.equal(out["lat_ctx"][0, :6], latent[0])
    assert out["lat_ctx"][1:].abs().sum() == 0 and out["lat_ctx"][0, 6:].abs().sum() == 0
    assert out["ctx_mask"][:, :6].eq(1).all() and out["ctx_mask"][:, 6:].eq(0).all()


def test_loudness_is_matched_to_the_reference_and_peaks_stay_below_one():
    from flashtts_mega.pipeline import _loudness, match_loudness

    rng = np.random.default_rng(0)
    reference = (0.05 * rng.standard_normal(48000)).astype(np.float32)
    quiet = (0.01 * rng.standard_normal(48000)).astype(np.float32)
    target = _loudness(reference)
    out = match_loudness(quiet, target)
    assert abs(_loudness(out) - target) < 0.5 and out.dtype == np.float32
    loud = match_loudness(quiet, target + 40)  # would clip: scaled back to a 0.95 peak
    assert np.abs(loud).max() == pytest.approx(0.95, abs=1e-3)
    short = np.full(1000, 0.1, np.float32)  # under one 0.4 s block: left as it is
    assert np.array_equal(match_loudness(short, target), short)


def test_a_runaway_segment_is_cut_to_its_texts_bound():
    from flashtts_mega.alignment import length_regulate
    from flashtts_mega.pipeline import _cap_frames

    mel2ph = length_regulate(torch.tensor([[100, 300, 100]]))
    capped, cut = _cap_frames(mel2ph, 250)
    assert cut and capped.shape[1] == 248 and capped.unique().tolist() == [1, 2, 3]
    same, cut = _cap_frames(mel2ph, 1000)
    assert not cut and torch.equal(same, mel2ph)
