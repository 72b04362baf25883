"""The Orpheus engine end to end: tiny model, real SNAC, every installed LLM backend."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import pytest_asyncio
from flashtts_core.backend import BackendConfig
from flashtts_core.errors import InvalidRequest, NotFound, UnsupportedCapability
from flashtts_core.options import EngineOptions
from flashtts_core.plugins import get_plugin_manager
from flashtts_core.request import SynthesisRequest, VoiceReference
from flashtts_core.sampling import SamplingOverrides
from flashtts_orpheus import frames
from flashtts_orpheus.engine import OrpheusEngine

from conftest import installed_backends, with_gguf

pytestmark = pytest.mark.asyncio(loop_scope="module")

FRAMES = 10
MAX_TOKENS = FRAMES * frames.SLOTS  # the tiny LLM never stops early: exactly FRAMES frames
CHUNKS = FRAMES - frames.WINDOW_FRAMES + 1  # one chunk per frame from the 4th on
# Backends that generate one sequence at a time (one worker thread).
SERIAL_BACKENDS = {"llama-cpp", "mlx-lm"}


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=installed_backends())
async def engine(request, tiny_orpheus, tmp_path_factory):
    pm = get_plugin_manager()
    backend_cls = pm.get_backend(request.param)
    model_path = tiny_orpheus
    if request.param == "llama-cpp":
        model_path = with_gguf(tiny_orpheus, tmp_path_factory.mktemp("gguf") / "tiny-orpheus")
    options = EngineOptions(
        model_path=model_path,
        backend=request.param,
        llm_device="cpu",
        detokenizer_device="cpu",
        torch_dtype="float32",
        max_length=4096,
        batch_size=8,
        wait_timeout=0.05,
    )

    async def create_backend(config: BackendConfig):
        return await backend_cls.create(config)

    engine = await OrpheusEngine.load(options, create_backend)
    yield engine
    await engine.close()


class ObservedBackend:
    """The engine's real backend, with the ids it streams counted (and optionally one id injected)."""

    def __init__(self, inner, inject_after: int | None = None, inject: int = 0):
        self.inner = inner
        self.inject_after = inject_after
        self.inject = inject
        self.emitted = 0
        self.delta_sizes: list[int] = []
        self.prompts: list[list[int]] = []

    async def stream(self, prompt_ids, params):
        self.prompts.append(list(prompt_ids))
        async for delta in self.inner.stream(prompt_ids, params):
            delta = list(delta)
            if self.inject_after is not None and self.emitted <= self.inject_after < self.emitted + len(delta):
                cut = self.inject_after - self.emitted
                delta = delta[:cut] + [self.inject] + delta[cut:]
            self.emitted += len(delta)
            self.delta_sizes.append(len(delta))
            yield delta

    async def close(self):
        pass


class observe:
    def __init__(self, engine, **kwargs):
        self.engine = engine
        self.observed = ObservedBackend(engine.backend, **kwargs)

    def __enter__(self) -> ObservedBackend:
        self.real, self.engine.backend = self.engine.backend, self.observed
        return self.observed

    def __exit__(self, *exc):
        self.engine.backend = self.real


def request(text: str = "Hello there.", **kwargs) -> SynthesisRequest:
    sampling = SamplingOverrides(max_tokens=kwargs.pop("max_tokens", MAX_TOKENS), seed=kwargs.pop("seed", None))
    return SynthesisRequest(text=text, sampling=sampling, **kwargs)


async def drain(engine, req) -> np.ndarray:
    chunks = [c async for c in engine.synthesize(req)]
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)


async def test_speaks_well_formed_frames_as_24khz_audio(engine):
    audio = await drain(engine, request(voice="tara"))
    assert engine.sample_rate == 24000
    assert audio.dtype == np.float32 and audio.shape == (CHUNKS * frames.SAMPLES_PER_FRAME,)
    assert np.isfinite(audio).all() and np.abs(audio).max() > 0
    assert engine.malformed_frames == 0


async def test_first_chunk_after_four_frames_then_one_per_frame(engine):
    with observe(engine) as backend:
        emitted_at_chunk = []
        async for chunk in engine.synthesize(request(voice="leah", stream=True)):
            assert chunk.shape == (frames.SAMPLES_PER_FRAME,)
            emitted_at_chunk.append(backend.emitted)
    assert len(emitted_at_chunk) == CHUNKS
    expected = [frames.WINDOW_FRAMES * frames.SLOTS + k * frames.SLOTS for k in range(CHUNKS)]
    if set(backend.delta_sizes) == {1}:  # a backend streaming id by id shows the exact points
        assert emitted_at_chunk == expected
    else:  # ids in bursts: never a chunk before its frame exists
        assert all(got >= want for got, want in zip(emitted_at_chunk, expected))


async def test_voice_and_emotion_tags_reach_the_prompt(engine):
    with observe(engine) as backend:
        await drain(engine, request("Well <laugh> that was fun.", voice="zoe", max_tokens=7))
    (prompt,) = backend.prompts
    assert prompt[:2] == [frames.START_OF_HUMAN, frames.BEGIN_OF_TEXT] and prompt[-4:] == [
        128009,
        128260,
        128261,
        128257,
    ]
    assert engine.tokenizer.decode(prompt[2:-4]) == "zoe: Well <laugh> that was fun."


async def test_special_token_markup_in_the_text_stays_text(engine):
    text = "Hi <|eot_id|> there <custom_token_2> and <laugh>"
    with observe(engine) as backend:
        await drain(engine, request(text, voice="tara", max_tokens=7))
    (prompt,) = backend.prompts
    body = prompt[2:-4]
    assert max(body) < frames.BEGIN_OF_TEXT  # no end of turn, no end of speech inside the text
    assert engine.tokenizer.decode(body) == "tara: Hi <|eot_id|> there < custom_token_2> and <laugh>"


async def test_text_with_nothing_to_speak_is_a_4xx(engine):
    with pytest.raises(InvalidRequest, match="nothing to speak") as err:
        await drain(engine, request("\u200b\u200d"))  # zero-width characters only
    assert err.value.status == 400


async def test_default_voice_is_the_first_of_the_language(engine):
    with observe(engine) as backend:
        await drain(engine, request(max_tokens=7))
    assert engine.tokenizer.decode(backend.prompts[0][2:-4]).startswith("tara: ")


async def test_malformed_frame_is_skipped_and_counted(engine):
    before = engine.malformed_frames
    wrong_slot = frames.AUDIO_BASE + 5 * frames.CODEBOOK_SIZE  # code 0 of slot 5, in the middle of a frame
    with observe(engine, inject_after=2 * frames.SLOTS + 3, inject=wrong_slot):
        audio = await drain(engine, request())
    assert engine.malformed_frames == before + 1
    assert audio.shape == ((CHUNKS - 1) * frames.SAMPLES_PER_FRAME,)  # one frame lost, nothing else


async def test_long_text_is_split_and_spoken_segment_by_segment(engine):
    text = "The first sentence is here. A second one follows it. And a third ends it."
    with observe(engine) as backend:
        audio = await drain(engine, request(text, window_size=6, length_threshold=6))
    assert len(backend.prompts) == 3
    assert audio.shape == (3 * CHUNKS * frames.SAMPLES_PER_FRAME,)


async def test_concurrent_requests_share_snac_batches(engine):
    before = engine.decoder.largest_batch
    results = await asyncio.gather(*(drain(engine, request(voice=v)) for v in ("tara", "dan", "mia")))
    assert all(r.shape == (CHUNKS * frames.SAMPLES_PER_FRAME,) for r in results)
    if engine.backend.name not in SERIAL_BACKENDS:  # one sequence at a time: windows never coincide
        assert max(before, engine.decoder.largest_batch) > 1


async def test_closing_the_stream_stops_generation(engine):
    with observe(engine) as backend:
        stream = engine.synthesize(request(max_tokens=700, stream=True))
        await stream.__anext__()
        await stream.aclose()
    assert backend.emitted < 700


async def test_unsupported_requests_are_clear_4xx(engine):
    with pytest.raises(NotFound, match="unknown voice 'alice'") as err:
        engine.check_request(request(voice="alice"))
    assert err.value.status == 404
    with pytest.raises(UnsupportedCapability) as err:
        engine.check_request(request(voice="tara", pitch="high"))
    assert err.value.status == 400
    with pytest.raises(UnsupportedCapability):
        engine.check_request(request(voice="tara", speed="low"))
    with pytest.raises(UnsupportedCapability, match="cloning"):
        engine.check_request(request(reference=VoiceReference(audio=np.zeros(24000, np.float32), sample_rate=24000)))
    with pytest.raises(NotFound):
        await drain(engine, request(voice="pierre"))  # a French voice on the English model


async def test_capabilities_and_sampling_defaults(engine):
    caps = engine.capabilities
    assert (caps.clone, caps.pitch_speed, caps.named_voices, caps.multi_speaker, caps.streaming) == (
        False,
        False,
        True,
        True,
        True,
    )
    d = engine.default_sampling
    assert (d.temperature, d.top_p, d.repetition_penalty, d.max_tokens, d.stop_token_ids) == (
        0.6,
        0.9,
        1.1,
        1200,
        (128258,),
    )
    assert engine.info()["lang"] == "english" and engine.voices[0] == "tara"


def llm_only_copy(tiny_orpheus, folder):
    """The tiny model's LLM files (linked, not copied) in a folder with no snac/ inside."""
    folder.mkdir()
    for item in tiny_orpheus.iterdir():
        if item.name != "snac":
            (folder / item.name).symlink_to(item)
    return folder


async def test_codec_from_snac_path_when_the_model_folder_has_none(tiny_orpheus, tmp_path):
    from flashtts_core.errors import ModelLoadError

    model = llm_only_copy(tiny_orpheus, tmp_path / "orpheus-3b-0.1-ft")
    assert OrpheusEngine.detect(model)  # detection does not need the codec

    async def no_backend(config):
        raise AssertionError("the missing codec must be reported before the LLM loads")

    with pytest.raises(ModelLoadError, match="--snac_path"):
        await OrpheusEngine.load(EngineOptions(model_path=model), no_backend)

    backend_cls = get_plugin_manager().get_backend("torch")
    options = EngineOptions(
        model_path=model, snac_path=tiny_orpheus / "snac", llm_device="cpu", detokenizer_device="cpu"
    )
    engine = await OrpheusEngine.load(options, backend_cls.create)
    try:
        audio = await drain(engine, request(voice="jess", max_tokens=5 * frames.SLOTS))
        assert audio.shape == (2 * frames.SAMPLES_PER_FRAME,)
        assert engine.codec.path == tiny_orpheus / "snac"
    finally:
        await engine.close()


async def test_lang_selects_the_voice_set(tiny_orpheus, tmp_path):
    model = llm_only_copy(tiny_orpheus, tmp_path / "3b-fr-ft-research_release")
    (model / "snac").symlink_to(tiny_orpheus / "snac")
    backend_cls = get_plugin_manager().get_backend("torch")
    engine = await OrpheusEngine.load(
        EngineOptions(model_path=model, llm_device="cpu", detokenizer_device="cpu"), backend_cls.create
    )
    try:
        assert engine.lang == "french" and engine.voices == ["pierre", "amelie", "marie"]  # from the folder name
        with pytest.raises(NotFound, match="pierre"):
            engine.check_request(request(voice="tara"))
        audio = await drain(engine, request("Bonjour <chuckle> !", voice="amelie", max_tokens=4 * frames.SLOTS))
        assert audio.shape == (frames.SAMPLES_PER_FRAME,)
    finally:
        await engine.close()
