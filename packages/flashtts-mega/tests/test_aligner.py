"""The aligner on a tiny random checkpoint in upstream's layout, reading a real wav file."""

import numpy as np
import pytest
import soundfile as sf
import torch
from flashtts_core.audio_io import load_audio
from flashtts_core.errors import AudioDecodeError, ModelLoadError
from flashtts_mega import phones
from flashtts_mega.aligner import (
    CHECKPOINT,
    INNER_KEY,
    Aligner,
    DecoderCache,
    ReferenceAlignment,
    fix_durations,
    log_mel_spectrogram,
    mel_filters,
    pad_reference,
)
from flashtts_mega.checkpoint import load_state_dict, read_config, save_checkpoint, write_config
from flashtts_mega.config import AlignerConfig
from flashtts_mega.tiny_model import ALIGNER_TINY, write_scripted_aligner, write_tiny_aligner

WIN_SIZE = 1536  # any win_size works; the engine passes the DiT config's


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_dir(tiny_checkpoint):
    return tiny_checkpoint("aligner_lm", write_tiny_aligner)


@pytest.fixture(scope="module")
def aligner(tiny_dir):
    return Aligner.from_checkpoint(tiny_dir)


@pytest.fixture(scope="module")
def reference_wav(tmp_path_factory):
    """A 2.5 s 24 kHz recording on disk: a gliding tone with noise and a pause, read back by core."""
    sr = 24000
    t = np.arange(int(2.5 * sr)) / sr
    wav = 0.3 * np.sin(2 * np.pi * (180 + 200 * t) * t) + 0.02 * np.random.default_rng(0).standard_normal(t.size)
    wav[int(1.2 * sr) : int(1.5 * sr)] = 0.0
    path = tmp_path_factory.mktemp("ref") / "reference.wav"
    sf.write(path, wav.astype(np.float32), sr)
    samples, _ = load_audio(path.read_bytes(), sr)
    return samples


def test_tiny_checkpoint_has_upstreams_layout(tiny_dir, aligner):
    assert sorted(p.name for p in tiny_dir.iterdir()) == ["config.yaml", CHECKPOINT]
    raw = torch.load(tiny_dir / CHECKPOINT, weights_only=True)
    assert list(raw) == ["state_dict"] and list(raw["state_dict"]) == [INNER_KEY]
    assert (tiny_dir / CHECKPOINT).stat().st_size < 4_000_000
    config = AlignerConfig.from_dict(
        {"n_audio_head": 2, "n_text_head": 2}, load_state_dict(tiny_dir / CHECKPOINT, INNER_KEY)
    )
    assert config.n_state == 32 and config.n_audio_layer == config.n_text_layer == 1
    assert config.n_vocab == 6800 and config.n_mels == 80
    assert config == AlignerConfig.from_dict(read_config(tiny_dir)) == ALIGNER_TINY
    assert not any(p.requires_grad for p in aligner.parameters()) and not aligner.training


def test_strict_load_names_missing_and_unexpected_keys(tiny_dir, tmp_path):
    state = load_state_dict(tiny_dir / CHECKPOINT, INNER_KEY)
    write_config(tmp_path / "a", {"n_audio_head": 2, "n_text_head": 2})
    save_checkpoint(tmp_path / "a" / CHECKPOINT, INNER_KEY, {**state, "decoder.extra.weight": torch.zeros(1)})
    with pytest.raises(ModelLoadError, match="unexpected keys: decoder.extra.weight"):
        Aligner.from_checkpoint(tmp_path / "a")
    partial = {k: v for k, v in state.items() if k != "decoder.ln.bias"}
    write_config(tmp_path / "b", {})
    save_checkpoint(tmp_path / "b" / CHECKPOINT, INNER_KEY, partial)
    with pytest.raises(ModelLoadError, match="missing keys: decoder.ln.bias"):
        Aligner.from_checkpoint(tmp_path / "b")
    save_checkpoint(tmp_path / "c" / CHECKPOINT, "dur_model", state)
    write_config(tmp_path / "c", {})
    with pytest.raises(ModelLoadError, match="'model'"):
        Aligner.from_checkpoint(tmp_path / "c")


def test_mel_filterbank_is_slaney_triangles():
    fb = mel_filters(80)
    assert fb.shape == (80, 201) and fb.dtype == np.float32 and (fb >= 0).all()
    peaks = fb.argmax(1)
    assert (np.diff(peaks) >= 0).all() and peaks[-1] > 190
    # Slaney normalisation: every triangle has unit area in Hz (bins are 40 Hz apart)
    area = fb.sum(1) * 40.0
    assert np.allclose(area, 1.0, atol=0.1) and abs(area.mean() - 1.0) < 0.01
    # entries of openai-whisper's assets/mel_filters.npz ("mel_80"), which upstream's aligner was fed
    for row, col, value in ((0, 1, 0.02486259490251541), (10, 10, 0.01990821771323681), (40, 43, 0.014735566452145576)):
        assert fb[row].argmax() == col and abs(fb[row, col] - value) < 1e-8
    assert fb[79].argmax() == 192 and abs(fb[79, 192] - 0.0031647118739783764) < 1e-8
    assert abs(fb.astype(np.float64).sum() - 1.999024092387117) < 1e-6


def test_log_mel_follows_whispers_recipe():
    sr = 16000
    t = np.arange(sr) / sr
    mel = log_mel_spectrogram(0.5 * np.sin(2 * np.pi * 1000 * t))
    assert mel.shape == (80, sr // 160)
    top = float(mel.max())
    assert float(mel.min()) >= top - 2.0 - 1e-6  # floor at max − 8 in log10, scaled by 1/4
    loudest = int(mel.mean(1).argmax())
    assert abs(loudest - int(mel_filters(80)[:, 25].argmax())) <= 1  # 1 kHz is FFT bin 25


def test_pad_reference_follows_upstream():
    for n in (1000, 1534, 1535, 1536, 4000):
        padded = pad_reference(np.ones(n, dtype=np.float32), WIN_SIZE)
        rest = n % WIN_SIZE
        expected = n + (WIN_SIZE - 1 - rest if rest < WIN_SIZE - 1 else 0) + 12000
        assert len(padded) == expected and padded.dtype == np.float32
        assert padded[:n].all() and not padded[n:].any()


def test_fix_durations_match_the_frame_count():
    assert fix_durations([3, 4, 5], 20) == [3, 4, 13]
    assert fix_durations([3, 4, 5], 9) == [2, 3, 4]
    assert fix_durations([1, 0, 5], 4) == [0, 0, 4]


def test_alignment_of_a_real_wav_is_well_formed(aligner, reference_wav):
    wav = pad_reference(reference_wav, WIN_SIZE)
    alignment = aligner.align(wav)
    n = alignment.ph.shape[1]
    frames = (len(wav) * 2 // 3 // 160) // 8 * 8
    assert alignment.ph.shape == alignment.tone.shape == (1, n) and n >= 1
    assert alignment.mel2ph.shape == (1, frames) == (1, alignment.frames)
    assert alignment.frames % 8 == 0 and alignment.latent_frames == frames // 4
    for t in (alignment.ph, alignment.tone, alignment.mel2ph):
        assert t.dtype == torch.long
    # every phone owns at least one frame, in order, and together they cover the reference
    assert torch.equal(torch.unique_consecutive(alignment.mel2ph[0]), torch.arange(1, n + 1))
    ph = alignment.ph[0]
    assert bool((((ph >= 3) & (ph <= 100)) | ((ph >= 101) & (ph <= 173))).all())
    assert set(alignment.tone[0].tolist()) <= {phones.EN_TONE_ID, *phones.ZH_TONE_IDS}
    # a saved alignment (plain int arrays) reads back the same
    again = ReferenceAlignment.from_arrays(alignment.to_arrays())
    assert all(torch.equal(getattr(again, k), getattr(alignment, k)) for k in ("ph", "tone", "mel2ph"))
    assert torch.equal(aligner.align(wav).mel2ph, alignment.mel2ph)  # deterministic


def test_from_arrays_refuses_a_broken_alignment():
    good = {"ph": np.array([[120, 130]]), "tone": np.array([[3, 3]]), "mel2ph": np.array([[1, 1, 2, 2]])}
    ReferenceAlignment.from_arrays(good)
    for bad in ({**good, "mel2ph": np.array([[1, 3, 3]])}, {**good, "tone": np.array([[3]])}, {"ph": good["ph"]}):
        with pytest.raises(ValueError, match="not an alignment"):
            ReferenceAlignment.from_arrays(bad)


def test_decode_is_bounded_and_alternates_phones_and_later_frames(aligner, reference_wav):
    mel = aligner.mel(pad_reference(reference_wav, WIN_SIZE))
    for steps in (3, 8, 768):
        tokens = aligner.decode(mel, max_steps=steps)
        assert len(tokens) <= steps - 1 and len(tokens) % 2 == 0 and tokens
        frames = [t - phones.TIMESTAMP_OFFSET for t in tokens[1::2]]
        assert all(a < b for a, b in zip([0] + frames, frames)) and frames[-1] <= mel.shape[1]
        assert set(tokens[0::2]) <= set(phones.legal_phone_tokens())


def test_cached_decoder_equals_full_recompute(aligner):
    audio = aligner.encoder(torch.randn(1, 80, 64))
    tokens = torch.tensor([[phones.ALIGN_BOS, 201, 805, 145, 812, 130]])
    full = aligner.decoder(tokens, DecoderCache(aligner.decoder, audio, 8))
    cache = DecoderCache(aligner.decoder, audio, 8)
    steps = torch.cat([aligner.decoder(tokens[:, i : i + 1], cache) for i in range(tokens.shape[1])], dim=1)
    assert torch.allclose(full, steps, atol=1e-5)


def test_reference_longer_than_the_aligner_takes_is_a_clear_400():
    with torch.random.fork_rng():
        short = Aligner(n_audio_ctx=100, n_state=32, n_audio_head=2, n_audio_layer=1, n_text_head=2, n_text_layer=1)
    assert short.max_frames == 200
    with pytest.raises(AudioDecodeError, match="at most 2.0 s") as err:
        short.align(np.zeros(3 * 24000, dtype=np.float32))
    assert err.value.status == 400 and err.value.param == "reference_audio"


def test_tiny_checkpoint_gives_upstreams_logits(aligner):
    """Upstream's AudioEncoder/TextDecoder (whisper_small.py) loaded with this same tiny checkpoint
    gave these logits for this input (computed once with upstream's code, 2026-12-02)."""
    mel = torch.sin(torch.arange(80 * 64, dtype=torch.float32).reshape(1, 80, 64) / 7.0)
    tokens = torch.tensor([[phones.ALIGN_BOS, 201, 805, 145, 812]])
    with torch.inference_mode():
        logits = aligner.decoder(tokens, DecoderCache(aligner.decoder, aligner.encoder(mel), 8))
    expected = [0.4172165095806122, 0.3237677812576294, 0.274761825799942, 0.2670871615409851]
    assert torch.allclose(logits[0, -1, [0, 145, 812, 6799]], torch.tensor(expected), atol=1e-5)
    assert logits[0].argmax(-1).tolist() == [4121, 2455, 1317, 5147, 4249]


def test_scripted_aligner_writes_one_even_alignment_in_free_greedy_decoding(tmp_path, reference_wav):
    """The full-size benches' aligner: upstream's free greedy loop (argmax, no mask) on its logits
    gives phones at even positions, strictly later end frames at odd ones, then EOS; ours the same."""
    wav = pad_reference(reference_wav, WIN_SIZE)
    write_scripted_aligner(tmp_path / "aligner_lm", wav, config=ALIGNER_TINY)
    aligner = Aligner.from_checkpoint(tmp_path / "aligner_lm")
    mel = aligner.mel(wav)
    frames = mel.shape[1]
    with torch.inference_mode():
        audio = aligner.encoder(mel[None])
        tokens = torch.tensor([[phones.ALIGN_BOS]])
        for _ in range(200):
            cache = DecoderCache(aligner.decoder, audio, tokens.shape[1])
            nxt = aligner.decoder(tokens, cache)[0, -1].argmax()
            tokens = torch.cat([tokens, nxt.view(1, 1)], dim=1)
            if int(nxt) == phones.ALIGN_EOS:
                break
    free = tokens[0, 1:-1].tolist()
    assert int(tokens[0, -1]) == phones.ALIGN_EOS and len(free) % 2 == 0
    n = len(free) // 2
    assert n == round(frames / 100 * 12)
    ends = [t - phones.TIMESTAMP_OFFSET for t in free[1::2]]
    assert ends == sorted(set(ends)) and ends[-1] == frames
    assert all(phones.OTHER_PHONE_FIRST <= p < phones.SIL_ID for p in free[::2])
    assert aligner.decode(mel) == free  # the constrained decode agrees
    alignment = aligner.align(wav)
    assert alignment.ph.shape == (1, n) and alignment.mel2ph.shape == (1, frames // 8 * 8)
