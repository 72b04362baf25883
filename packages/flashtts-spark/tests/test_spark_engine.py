"""The Spark-TTS engine end to end on a tiny model: real loaders, the torch backend, real BiCodec."""

from __future__ import annotations

import asyncio
import io
import json

import numpy as np
import pytest
import pytest_asyncio
import soundfile as sf
from flashtts_core.errors import AudioDecodeError, FlashTTSError
from flashtts_core.options import EngineOptions
from flashtts_core.request import Level, SynthesisRequest, VoiceReference
from flashtts_core.sampling import SamplingOverrides
from flashtts_server.runtime import TTSRuntime
from flashtts_spark.fixed_voices import FOLDER
from flashtts_spark.streaming import FIRST_CHUNK_TOKENS

pytestmark = pytest.mark.asyncio(loop_scope="module")

HOP = 320
SR = 16000


def _tone(seconds: float, freq: float = 180.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    wave = 0.3 * np.sin(2 * np.pi * freq * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 2 * t))
    return (wave + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def _wav_bytes(samples: np.ndarray, sr: int = SR) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _request(text: str = "Hello there.", max_tokens: int = 20, seed: int | None = 1, **kwargs) -> SynthesisRequest:
    return SynthesisRequest(text=text, sampling=SamplingOverrides(max_tokens=max_tokens, seed=seed), **kwargs)


async def _load(model_path, role_dir, **options) -> TTSRuntime:
    return await TTSRuntime.load(EngineOptions(model_path=model_path, backend="torch", role_dir=role_dir, **options))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def runtime(tiny_spark, tmp_path_factory):
    rt = await _load(tiny_spark, tmp_path_factory.mktemp("roles"))
    yield rt
    await rt.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def reference(runtime):
    return await runtime.reference_from_bytes(_wav_bytes(_tone(2.0)))


def _check_audio(audio: np.ndarray, tokens: int) -> None:
    assert audio.dtype == np.float32
    assert audio.shape == (tokens * HOP,)
    assert np.isfinite(audio).all()
    assert np.abs(audio).max() > 0


async def test_reference_features(runtime, reference):
    g = reference.features["global_tokens"]
    s = reference.features["semantic_tokens"]
    assert g.shape == (32,) and g.dtype == np.int64 and g.min() >= 0 and g.max() < 4096
    assert s.ndim == 1 and s.size == 99 and s.min() >= 0 and s.max() < 8192  # 2 s at 50 Hz (wav2vec2 framing)


async def test_clone(runtime, reference):
    audio = await runtime.render(runtime.synthesize(_request(reference=reference, max_tokens=30)))
    _check_audio(audio, 30)


async def test_clone_with_transcript(runtime, reference):
    ref = VoiceReference(
        audio=reference.audio,
        sample_rate=reference.sample_rate,
        text="This is the reference.",
        features=reference.features,
    )
    audio = await runtime.render(runtime.synthesize(_request(reference=ref, max_tokens=25)))
    _check_audio(audio, 25)


async def test_clone_with_pitch_and_speed(runtime, reference):
    request = _request(reference=reference, max_tokens=15, pitch="very_high", speed="low")
    _check_audio(await runtime.render(runtime.synthesize(request)), 15)


@pytest.mark.parametrize("voice", ["female", "male"])
async def test_builtin_voice_every_level(runtime, voice):
    for level in Level:
        for kwargs in ({"pitch": level}, {"speed": level}):
            audio = await runtime.render(runtime.synthesize(_request(voice=voice, max_tokens=12, **kwargs)))
            _check_audio(audio, 12)


async def test_default_voice_and_seed_reproducible(runtime):
    a = await runtime.render(runtime.synthesize(_request(max_tokens=20, seed=7)))
    b = await runtime.render(runtime.synthesize(_request(max_tokens=20, seed=7)))
    c = await runtime.render(runtime.synthesize(_request(max_tokens=20, seed=8)))
    _check_audio(a, 20)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


async def test_long_text_yields_every_segment(runtime, reference):
    text = "The first sentence is here. A second one follows it! Then a third? And finally the fourth."
    for kwargs in ({"voice": "male"}, {"reference": reference}):
        request = _request(text=text, max_tokens=10, length_threshold=5, window_size=6, **kwargs)
        chunks = [c async for c in runtime.synthesize(request)]
        assert len(chunks) == 4
        for chunk in chunks:
            _check_audio(chunk, 10)


async def test_long_text_streamed_matches_non_stream(runtime):
    text = "The first sentence is here. A second one follows it! Then a third?"
    kwargs = dict(text=text, voice="male", max_tokens=80, seed=4, length_threshold=5, window_size=6)
    whole = await runtime.render(runtime.synthesize(_request(**kwargs)))
    streamed = await runtime.render(runtime.synthesize(_request(stream=True, **kwargs)))
    assert whole.shape == streamed.shape == (3 * 80 * HOP,)
    assert np.abs(streamed - whole).max() < 1e-4


@pytest.mark.parametrize("voice", ["female", "clone"])
async def test_stream_matches_non_stream(runtime, reference, voice):
    kwargs = {"reference": reference} if voice == "clone" else {"voice": "female"}
    tokens = 170  # chunks of 50, 100, then the rest
    whole = await runtime.render(runtime.synthesize(_request(max_tokens=tokens, seed=5, **kwargs)))
    chunks = [c async for c in runtime.synthesize(_request(max_tokens=tokens, seed=5, stream=True, **kwargs))]
    streamed = np.concatenate(chunks)
    assert len(chunks) >= 3
    assert len(chunks[0]) <= FIRST_CHUNK_TOKENS * HOP  # first audio after ~1 s worth of tokens
    assert streamed.shape == whole.shape == (tokens * HOP,)
    # Chunks are decoded with left context and a lookahead, then crossfaded: nearly the whole decode.
    assert np.abs(streamed - whole).max() < 1e-4


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"this is not audio at all, just some text bytes" * 10,
        _wav_bytes(np.zeros(SR, dtype=np.float32)),  # pure silence
        _wav_bytes(_tone(0.001)),  # 1 ms
        _wav_bytes(_tone(600.0)),  # 10 minutes
    ],
    ids=["empty", "not-audio", "silence", "1ms", "10min"],
)
async def test_bad_reference_audio_bytes(runtime, data):
    with pytest.raises(AudioDecodeError) as info:
        await runtime.reference_from_bytes(data)
    assert 400 <= info.value.status < 500


@pytest.mark.parametrize(
    "audio",
    [np.zeros(0, np.float32), np.zeros(SR, np.float32), _tone(0.001), _tone(600.0), np.full(SR, np.nan, np.float32)],
    ids=["empty", "silence", "1ms", "10min", "nan"],
)
async def test_bad_reference_audio_arrays(runtime, audio):
    # The engine checks what it is given too: roles and embedding code bypass the byte decoder.
    with pytest.raises(AudioDecodeError):
        await runtime.engine.prepare_reference(VoiceReference(audio=audio, sample_rate=SR))


async def test_reference_at_another_rate_is_resampled(runtime):
    ref = await runtime.engine.prepare_reference(VoiceReference(audio=_tone(2.0)[::2].copy(), sample_rate=8000))
    assert ref.sample_rate == SR and ref.features["global_tokens"].shape == (32,)


async def test_role_keeps_its_tokens(runtime, reference):
    name = await runtime.add_role("narrator", VoiceReference(audio=reference.audio, sample_rate=SR, text="Hi."))
    cache = runtime.roles.root / name / "cache" / "spark"
    np.testing.assert_array_equal(np.load(cache / "global_tokens.npy"), reference.features["global_tokens"])
    np.testing.assert_array_equal(np.load(cache / "semantic_tokens.npy"), reference.features["semantic_tokens"])
    runtime._role_cache.clear()  # as after a restart: the tokens come from disk
    ref = await runtime.role_reference(name)
    np.testing.assert_array_equal(ref.features["global_tokens"], reference.features["global_tokens"])
    audio = await runtime.render(runtime.synthesize(_request(reference=ref, max_tokens=10)))
    _check_audio(audio, 10)


async def test_unknown_voice_is_a_4xx(runtime):
    with pytest.raises(FlashTTSError) as info:
        await runtime.render(runtime.synthesize(_request(voice="alloy")))
    assert info.value.status == 404


async def test_fix_voice_across_requests_and_restarts(tiny_spark, tmp_path):
    role_dir = tmp_path / "roles"
    voice_file = role_dir / FOLDER / "male-high.json"
    rt = await _load(tiny_spark, role_dir, fix_voice=True)
    try:
        first = await rt.render(rt.synthesize(_request(voice="male", pitch="high", seed=11)))
        stored = json.loads(voice_file.read_text())
        assert len(stored["global_tokens"]) == 32
        other_seed = await rt.render(rt.synthesize(_request(voice="male", pitch="high", seed=12)))
        again = await rt.render(rt.synthesize(_request(voice="male", pitch="high", seed=11)))
        _check_audio(other_seed, 20)
        np.testing.assert_array_equal(first, again)
        assert json.loads(voice_file.read_text()) == stored  # sampled once
        assert rt.engine.fixed_voices.get("male", "high").global_tokens == tuple(stored["global_tokens"])
        assert rt.roles.names() == []  # the store is not a role
    finally:
        await rt.close()

    rt = await _load(tiny_spark, role_dir, fix_voice=True)
    try:
        after_restart = await rt.render(rt.synthesize(_request(voice="male", pitch="high", seed=11)))
        np.testing.assert_array_equal(first, after_restart)
        # The stored voice is what decides the timbre: replace its global tokens, the audio changes.
        stored["global_tokens"] = [(g + 1) % 4096 for g in stored["global_tokens"]]
        voice_file.write_text(json.dumps(stored))
        rt.engine.fixed_voices._voices.clear()
        changed = await rt.render(rt.synthesize(_request(voice="male", pitch="high", seed=11)))
        assert changed.shape == first.shape and not np.array_equal(changed, first)
    finally:
        await rt.close()


async def test_closing_a_stream_stops_generation(runtime):
    chunks = runtime.synthesize(
        _request(
            text="One. Two. Three.", max_tokens=2000, length_threshold=1, window_size=1, voice="female", stream=True
        )
    )
    first = await chunks.__anext__()
    assert first.size > 0
    await chunks.aclose()  # a client that goes away
    for _ in range(100):
        if runtime.engine.backend.active == 0:
            break
        await asyncio.sleep(0.05)
    assert runtime.engine.backend.active == 0


async def test_a_failed_load_closes_the_backend_it_started(tiny_spark, tmp_path):
    from flashtts_backends.torch_backend import TorchBackend
    from flashtts_spark.engine import SparkEngine

    broken = tmp_path / "broken"
    broken.mkdir()
    for item in tiny_spark.iterdir():
        if item.name != "BiCodec":
            (broken / item.name).symlink_to(item)
    (broken / "BiCodec").mkdir()
    (broken / "BiCodec" / "config.yaml").symlink_to(tiny_spark / "BiCodec" / "config.yaml")
    (broken / "BiCodec" / "model.safetensors").write_bytes(b"not a safetensors file")
    started = []

    async def create_backend(config):
        backend = await TorchBackend.create(config)
        started.append(backend)
        return backend

    options = EngineOptions(
        model_path=broken,
        backend="torch",
        llm_device="cpu",
        tokenizer_device="cpu",
        detokenizer_device="cpu",
        role_dir=tmp_path / "roles",
    )
    from safetensors import SafetensorError

    with pytest.raises(SafetensorError):  # the damaged BiCodec weights
        await SparkEngine.load(options, create_backend)
    assert len(started) == 1 and started[0].model is None, "the backend must be closed after a failed load"
