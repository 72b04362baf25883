"""MegaTTS3's word timings: the phone durations the DiT is given, summed per word (word_timing.py)."""

from __future__ import annotations

import numpy as np
import pytest
import pytest_asyncio
from flashtts_core.options import EngineOptions
from flashtts_core.request import SynthesisRequest, WordTiming
from flashtts_core.sampling import SamplingOverrides
from flashtts_core.speaking_rate import max_speech_seconds
from flashtts_core.text import text_units
from flashtts_mega.frontend import prepare_text
from flashtts_mega.pipeline import MEL_FRAMES_PER_SECOND, _cap_frames, _derive_seed
from flashtts_mega.word_timing import phone_durations, word_frames
from flashtts_server.runtime import TTSRuntime

RATE = 24000
FRAME = 1 / MEL_FRAMES_PER_SECOND


def test_counts_that_add_up_give_each_word_its_phones():
    # sil (8 frames), then "Hi" = 2 phones, "there." = 4 phones
    spans = word_frames(["Hi", "there."], [2, 4], [8, 5, 7, 3, 3, 4, 40])
    assert [(w.word, w.start, w.end, w.exact) for w in spans] == [("Hi", 8, 20, True), ("there.", 20, 70, True)]


def test_counts_that_do_not_add_up_split_at_the_nearest_phone_boundary_in_proportion():
    spans = word_frames(["a", "b"], [1, 1], [8, 10, 10, 10, 10])  # 4 phones for 2 words of 1 each: 2 + 2
    assert [(w.start, w.end, w.exact) for w in spans] == [(8, 28, False), (28, 48, False)]
    assert word_frames(["a"], [0], [8, 16])[0].end == 24  # the last word always ends with the segment


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def runtime(tiny_mega, tmp_path_factory, one_thread):
    options = EngineOptions(
        model_path=tiny_mega, backend="torch", role_dir=tmp_path_factory.mktemp("roles"),
        llm_device="cpu", tokenizer_device="cpu", detokenizer_device="cpu",
    )  # fmt: skip
    rt = await TTSRuntime.load(options)
    yield rt
    await rt.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def reference(runtime, tiny_mega):
    latent = np.load(tiny_mega / "example.npy")
    return await runtime.reference_from_bytes((tiny_mega / "example.wav").read_bytes(), latent=latent)


def _request(text: str, reference, timings: list | None) -> SynthesisRequest:
    return SynthesisRequest(
        text=text, reference=reference, sampling=SamplingOverrides(seed=7), options={"mega": {"time_step": 4}},
        stream=True, word_timings=timings,
    )  # fmt: skip


async def _durations(engine, reference, text: str, index: int, count: int) -> tuple[list[int], list[int]]:
    """The segment's phone durations and its words' own phone counts, recomputed step by step."""
    voice = await engine._voice(reference)
    ph, tone = await engine.g2p.run(text)
    mel2ph = engine._predict_durations(voice, ph, tone, index, count, 1.0, _derive_seed(7, "duration", index))
    mel2ph, _ = _cap_frames(mel2ph, max_speech_seconds(text) * MEL_FRAMES_PER_SECOND)
    counts = [(await engine.g2p.run(word))[0].size(1) - 1 for word in text_units(text)]
    return phone_durations(mel2ph, ph.size(1)), counts


@pytest.mark.asyncio(loop_scope="module")
async def test_one_segment_word_times_are_its_cumulative_phone_durations(runtime, reference):
    text = "Hello there, how are you today?"
    timings: list[WordTiming] = []
    audio = await runtime.render(runtime.synthesize(_request(text, reference, timings)))
    _, segments = prepare_text(text)
    assert len(segments) == 1
    durations, counts = await _durations(runtime.engine, reference, segments[0], 0, 1)
    expected = word_frames(text_units(segments[0]), counts, durations)
    assert [t.word for t in timings] == text_units(segments[0])
    assert [(t.start, t.end, t.exact) for t in timings] == [
        pytest.approx((w.start * FRAME, w.end * FRAME, w.exact)) for w in expected
    ]
    ends = set(np.cumsum(durations).tolist())
    assert all(round(t.end * MEL_FRAMES_PER_SECOND) in ends for t in timings)  # words end on phone boundaries
    assert timings[0].start == pytest.approx(durations[0] * FRAME)  # after the leading sil
    assert timings[-1].end == pytest.approx(sum(durations) * FRAME)
    assert abs(timings[-1].end - len(audio) / RATE) <= FRAME  # the last word ends with the audio
    # Asking for timings changes nothing in the audio.
    again = await runtime.render(runtime.synthesize(_request(text, reference, None)))
    np.testing.assert_array_equal(audio, again)


@pytest.mark.asyncio(loop_scope="module")
async def test_segments_words_are_offset_by_where_each_segment_begins(runtime, reference):
    text = " ".join(["This sentence is long enough that the front end cuts the text into two segments."] * 2)
    timings: list[WordTiming] = []
    audio = await runtime.render(runtime.synthesize(_request(text, reference, timings)))
    _, segments = prepare_text(text)
    assert len(segments) == 2
    assert [t.word for t in timings] == text_units(segments[0]) + text_units(segments[1])
    assert all(
        a.end <= b.start + 1e-9
        for a, b in zip(timings, timings[1:])
        if a is not timings[len(text_units(segments[0])) - 1]
    )
    assert abs(timings[-1].end - len(audio) / RATE) <= FRAME
