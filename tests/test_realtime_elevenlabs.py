"""ElevenLabs' multi-context WebSocket (``/v1/text-to-speech/{voice_id}/multi-stream-input``) through a real
``flashtts serve`` on the tiny Spark model, driven by a real WebSocket client (the ``websockets`` package).

Every receive is bounded (READ_TIMEOUT): a server that hangs fails the test instead of stalling the run.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import math
import time
from typing import Optional

import httpx
import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from conftest import Server, assert_refused, start_server, torch_server_args

READ_TIMEOUT = 60.0
KEY = "el-secret"
MAX_PENDING = 20  # above the 16 contexts one socket may hold, so both limits can be reached
# About 30 s of audio for the tiny model, which never stops before its speaking-rate bound.
LONG_TEXT = " ".join(["Somewhere beyond the distant mountains the travellers kept walking."] * 4)


@pytest.fixture(scope="module")
def server(tiny_spark, tmp_path_factory) -> Server:
    tmp = tmp_path_factory.mktemp("realtime-elevenlabs")
    flags = ["--llm_device", "cpu", "--tokenizer_device", "cpu", "--detokenizer_device", "cpu"]
    flags += ["--api_key", KEY, "--max_pending_requests", str(MAX_PENDING), "--voice_alias", "rachel=female"]
    srv = start_server(torch_server_args(tiny_spark, tmp, *flags), tmp)
    yield srv
    srv.stop()


def opened(server: Server, voice: str = "female", output_format: Optional[str] = "pcm_16000", **kwargs):
    headers = kwargs.pop("headers", {"xi-api-key": KEY})
    query = kwargs.pop("query", None)
    if query is None:
        query = "model_id=eleven_flash_v2_5&auto_mode=true&sync_alignment=true"
        if output_format:
            query += f"&output_format={output_format}"
    url = f"ws://127.0.0.1:{server.port}/v1/text-to-speech/{voice}/multi-stream-input?{query}"
    return connect(url, additional_headers=headers, open_timeout=READ_TIMEOUT, max_size=16 * 1024 * 1024)


def text(context_id: str, piece: str, **extra) -> str:
    return json.dumps({"text": piece, "context_id": context_id, **extra})


def init(context_id: str) -> str:
    """The first message of a context, as both plugins send it."""
    return text(context_id, " ", voice_settings={"stability": 0.5, "similarity_boost": 0.8})


async def receive(ws) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), READ_TIMEOUT))


async def until_final(ws, context_ids: set[str]) -> list[dict]:
    """Every message until each of ``context_ids`` has had its isFinal."""
    messages, open_ids = [], set(context_ids)
    while open_ids:
        message = await receive(ws)
        messages.append(message)
        if message.get("isFinal"):
            open_ids.discard(message["contextId"])
    return messages


async def speak(ws, context_id: str, piece: str) -> list[dict]:
    """One context from its first message to its isFinal: ``piece``, flushed, then the context closed."""
    await ws.send(init(context_id))
    await ws.send(text(context_id, piece, flush=True))
    await ws.send(text(context_id, "", flush=True))
    await ws.send(json.dumps({"context_id": context_id, "close_context": True}))
    return await until_final(ws, {context_id})


def audio_of(messages: list[dict], context_id: str) -> bytes:
    return b"".join(base64.b64decode(m["audio"]) for m in messages if m.get("audio") and m["contextId"] == context_id)


def active_generations(server: Server) -> int:
    r = httpx.get(f"{server.url}/server_info", headers={"Authorization": f"Bearer {KEY}"}, timeout=10)
    r.raise_for_status()
    return r.json()["active_generations"]


def segment_seconds(piece: str) -> float:
    """The audio the tiny Spark model gives for one segment: its speaking-rate bound, in 20 ms tokens."""
    from flashtts_core.speaking_rate import max_speech_seconds

    return math.ceil(max_speech_seconds(piece) * 50) / 50


def livekit_reading(messages: list[dict]) -> list[tuple[str, float]]:
    """Word starts as livekit-plugins-elevenlabs reads them: normalizedAlignment's times as sent."""
    chars, starts = [], []
    for m in messages:
        a = m.get("normalizedAlignment")
        if a:
            chars += a["chars"]
            starts += a["charStartTimesMs"]
    words, at = [], None
    for char, start in zip(chars + [" "], starts + [0]):
        if char == " ":
            if at is not None:
                words.append(at)
            at = None
        elif at is None:
            at = ("", start / 1000)
        if char != " ":
            at = (at[0] + char, at[1])
    return words


def pipecat_reading(messages: list[dict]) -> list[tuple[str, float]]:
    """Word starts as Pipecat's ElevenLabsTTSService reads them: alignment's times plus a running clock
    that each message advances by its last character's end; isFinal messages are not read for timings."""
    clock, words, word, word_start = 0.0, [], "", None
    for m in messages:
        a = m.get("alignment")
        if m.get("isFinal") or not a:
            continue
        for char, start in zip(a["chars"], a["charStartTimesMs"]):
            if char == " ":
                if word:
                    words.append((word, word_start))
                word, word_start = "", None
            else:
                if word_start is None:
                    word_start = clock + start / 1000
                word += char
        clock += (a["charStartTimesMs"][-1] + a["charDurationsMs"][-1]) / 1000
    return words


# -- pure helpers -----------------------------------------------------------------------------------
def test_output_formats():
    from flashtts_core.errors import InvalidRequest
    from flashtts_server.realtime.elevenlabs import parse_output_format

    for name, rate in [("pcm_16000", 16000), ("pcm_44100", 44100), ("ulaw_8000", 8000), ("mp3_22050_32", 22050)]:
        assert parse_output_format(name)[0] == rate
    assert parse_output_format(None)[0] == 44100  # mp3_44100_128, the hosted default
    for bad in ("opus_48000_64", "pcm_12345", "mp3_22050", "wav", ""):
        if bad:
            with pytest.raises(InvalidRequest):
                parse_output_format(bad)


# -- the socket -------------------------------------------------------------------------------------
@pytest.mark.parametrize("output_format,rate,width", [("pcm_16000", 16000, 2), ("ulaw_8000", 8000, 1)])
async def test_a_turn_as_the_plugins_send_it(server, output_format, rate, width):
    """Init, sentences (auto_mode: each spoken as it comes), an empty flush, close_context: audio, alignment
    per sentence that both plugins read alike, isFinal last."""
    sentences = ["Hello there, my friend. ", "How are you today? "]
    async with opened(server, output_format=output_format) as ws:
        await ws.send(init("turn"))
        await ws.send(text("turn", sentences[0]))
        sent = time.perf_counter()
        first = await receive(ws)
        first_audio = time.perf_counter() - sent
        await ws.send(text("turn", sentences[1]))
        await ws.send(text("turn", "", flush=True))
        await ws.send(json.dumps({"context_id": "turn", "close_context": True}))
        messages = [first] + await until_final(ws, {"turn"})
    print(f"\n{output_format}: first audio {first_audio:.3f} s after the first sentence")
    assert first.get("audio") and first["contextId"] == "turn" and first["isFinal"] is False
    assert all(m["contextId"] == "turn" and "error" not in m for m in messages)
    assert [m for m in messages if m.get("isFinal")] == [messages[-1]]

    data = audio_of(messages, "turn")
    assert len(data) % width == 0
    seconds = len(data) / width / rate
    expected = sum(segment_seconds(s.strip()) for s in sentences)
    assert seconds == pytest.approx(expected, abs=0.05)

    # Alignment: one per sentence, after its audio; every word in order; both readings agree and lie
    # inside their sentence's span of the audio.
    aligned = [m for m in messages if m.get("alignment") and not m.get("isFinal")]
    assert len(aligned) == 2 and all(m["alignment"] == m["normalizedAlignment"] for m in aligned)
    livekit, pipecat = livekit_reading(messages), pipecat_reading(messages)
    assert [w for w, _ in livekit] == "".join(sentences).split()
    assert livekit == pipecat
    first_span = segment_seconds(sentences[0].strip())
    for word, start in livekit:
        in_first = word in sentences[0].split()
        low, high = (0.0, first_span) if in_first else (first_span, seconds)
        assert low - 1e-3 <= start <= high, (word, start, low, high)
    assert livekit[0][1] == 0.0 and livekit[len(sentences[0].split())][1] == pytest.approx(first_span, abs=2e-3)
    closing = messages[-1]["normalizedAlignment"]
    assert closing["chars"] == [" "] and closing["charStartTimesMs"][0] == pytest.approx(seconds * 1000, abs=1)
    # Each context is a request in /metrics, under the socket's route template.
    metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    route = 'route="/v1/text-to-speech/{voice_id}/multi-stream-input"'
    for family in ("flashtts_requests_total", "flashtts_time_to_first_audio_seconds_count"):
        assert any(line.startswith(family + "{") and route in line for line in metrics.splitlines()), family


async def test_mp3_is_one_stream_per_context(server):
    av = pytest.importorskip("av")
    async with opened(server, output_format="mp3_22050_32") as ws:
        messages = await speak(ws, "m", "An mp3 sentence. ")
    data = audio_of(messages, "m")
    with av.open(io.BytesIO(data), format="mp3") as container:
        frames = [f for f in container.decode(audio=0)]
    assert frames and frames[0].sample_rate == 22050
    seconds = sum(f.samples for f in frames) / 22050
    # The encoder's delay and last frame's padding aside (a few tens of ms).
    assert seconds == pytest.approx(segment_seconds("An mp3 sentence."), abs=0.1)


async def test_close_context_without_flush_stops_at_once_and_frees_the_generation(server):
    """A barge-in: close_context after text (no empty flush) stops the context at once."""
    async with opened(server) as ws:
        await ws.send(init("long"))
        await ws.send(text("long", LONG_TEXT + " "))
        first = await receive(ws)
        assert first.get("audio") and first["contextId"] == "long"
        assert active_generations(server) == 1
        await ws.send(json.dumps({"context_id": "long", "close_context": True}))
        closed = time.perf_counter()
        while active_generations(server) != 0:
            assert time.perf_counter() - closed < 1.0, "the generation was not freed"
            await asyncio.sleep(0.02)
        freed = time.perf_counter() - closed
        after = []
        while True:
            message = await receive(ws)
            after.append(message)
            if message.get("isFinal"):
                break
        # The socket serves on: a new context speaks to its end; nothing more for "long" after its isFinal.
        messages = await speak(ws, "next", "A short one. ")
    print(f"\nclose_context: generation freed {freed * 1000:.0f} ms after it was sent")
    assert after[-1] == {"contextId": "long", "isFinal": True}
    assert all(m["contextId"] == "long" and "error" not in m for m in after)
    assert all(m["contextId"] == "next" for m in messages) and audio_of(messages, "next")
    assert active_generations(server) == 0


async def test_close_socket_and_a_dropped_socket_free_their_contexts(server):
    async with opened(server) as ws:
        await ws.send(init("a"))
        await ws.send(text("a", LONG_TEXT + " "))
        assert (await receive(ws)).get("audio")
        await ws.send(json.dumps({"close_socket": True}))
        with pytest.raises(ConnectionClosed):
            while True:
                await asyncio.wait_for(ws.recv(), READ_TIMEOUT)
        assert ws.close_code == 1000
    async with opened(server) as ws:
        await ws.send(init("b"))
        await ws.send(text("b", LONG_TEXT + " "))
        assert (await receive(ws)).get("audio")
    deadline = time.perf_counter() + 5
    while active_generations(server) != 0:
        assert time.perf_counter() < deadline, "a closed socket left its generation running"
        await asyncio.sleep(0.05)


async def test_keepalives_say_nothing(server):
    async with opened(server) as ws:
        await ws.send(json.dumps({"text": ""}))  # Pipecat's, before a context is open
        await ws.send(text("k", ""))  # a context's, before its first text: nothing opens
        await ws.send("{")  # its error comes first: the keep-alives were answered with nothing
        message = await receive(ws)
        assert message["error"] == "invalid_request" and message["contextId"] is None
        # A keep-alive for a context whose turn has ended but is still speaking changes nothing either.
        await ws.send(init("e"))
        await ws.send(text("e", "Still speaking. ", flush=True))
        await ws.send(text("e", "", flush=True))
        await ws.send(json.dumps({"context_id": "e", "close_context": True}))
        await ws.send(text("e", ""))
        messages = await until_final(ws, {"e"})
    assert audio_of(messages, "e") and not any("error" in m for m in messages)


async def test_bad_messages_are_errors_for_their_context_only(server):
    async def error_for(ws, raw: str) -> dict:
        await ws.send(raw)
        message = await receive(ws)
        while message.get("contextId") == "good" and "error" not in message:
            message = await receive(ws)
        assert message.get("error") and message["message"] and message["code"] >= 400, message
        return message

    async def final_for(ws, context_id: str) -> None:
        message = await receive(ws)
        while message.get("contextId") == "good" and "error" not in message:
            message = await receive(ws)
        assert message == {"contextId": context_id, "isFinal": True}

    async with opened(server) as ws:
        await ws.send(init("good"))
        await ws.send(text("good", "This context keeps going "))  # no flush, auto_mode: spoken as it came
        assert (await error_for(ws, "{not json"))["contextId"] is None
        assert (await error_for(ws, "[1, 2]"))["code"] == 400
        assert (await error_for(ws, text("", "Hello.")))["code"] == 400
        assert (await error_for(ws, json.dumps({"text": "Hello."})))["code"] == 400  # no context_id
        assert (await error_for(ws, text("x" * 300, "Hello.")))["contextId"] is None  # too long to echo
        m = await error_for(ws, text("good", 42))  # a bad message for a running context: it runs on
        assert (m["contextId"], m["code"]) == ("good", 400)
        m = await error_for(ws, text("big", "x " * 3000))  # over --max_text_length (4096)
        assert (m["contextId"], m["code"]) == ("big", 413)
        await final_for(ws, "big")
        # The good context was never disturbed: it ends as a turn ends.
        await ws.send(text("good", "and then it ends. ", flush=True))
        await ws.send(text("good", "", flush=True))
        await ws.send(json.dumps({"context_id": "good", "close_context": True}))
        messages = await until_final(ws, {"good"})
    assert audio_of(messages, "good") and not any("error" in m for m in messages)


@pytest.mark.parametrize(
    "voice,output_format,code",
    [("nobody-by-this-name", "pcm_16000", 404), ("female", "opus_48000_64", 400), ("female", "pcm_11025", 400)],
    ids=["unknown-voice", "opus", "odd-rate"],
)
async def test_a_socket_whose_voice_or_format_is_refused(server, voice, output_format, code):
    """Each context that opens gets the error, then its isFinal; the socket stays open."""
    async with opened(server, voice=voice, output_format=output_format) as ws:
        for context_id in ("c1", "c2"):
            await ws.send(init(context_id))
            error, final = await receive(ws), await receive(ws)
            assert (error["contextId"], error["code"]) == (context_id, code), error
            assert final == {"contextId": context_id, "isFinal": True}
        assert active_generations(server) == 0


async def test_voice_alias_and_default_format(server):
    """``rachel`` is a --voice_alias; no output_format: mp3_44100_128, the hosted default."""
    async with opened(server, voice="rachel", output_format=None) as ws:
        messages = await speak(ws, "v", "Hi. ")
    data = audio_of(messages, "v")
    assert data[:3] == b"ID3" or (data[0] == 0xFF and data[1] & 0xE0 == 0xE0)  # an MP3 stream


async def test_too_many_contexts(server):
    async with opened(server) as ws:
        for i in range(16):
            await ws.send(init(f"c{i}"))  # open, nothing to say yet: no generation
        await ws.send(init("c16"))
        error, final = await receive(ws), await receive(ws)
        assert (error["contextId"], error["code"], error["error"]) == ("c16", 429, "too_many_contexts")
        assert final == {"contextId": "c16", "isFinal": True}
        for i in range(16):
            await ws.send(json.dumps({"context_id": f"c{i}", "close_context": True}))
        finals = [await receive(ws) for _ in range(16)]
        assert finals == [{"contextId": f"c{i}", "isFinal": True} for i in range(16)]
        # Room again.
        assert audio_of(await speak(ws, "after", "Room again. "), "after")


@pytest.mark.parametrize(
    "headers,query,ok",
    [
        ({}, None, False),
        ({"xi-api-key": "wrong"}, None, False),
        ({"xi-api-key": KEY}, None, True),
        ({"Authorization": f"Bearer {KEY}"}, None, True),
        ({}, f"xi_api_key={KEY}&output_format=pcm_16000", True),
    ],
    ids=["no-key", "wrong-key", "xi-api-key", "bearer", "query"],
)
async def test_api_key(server, headers: dict, query: Optional[str], ok: bool):
    connection = opened(server, headers=headers, query=query)
    if not ok:
        await assert_refused(connection)
        return
    async with connection as ws:
        messages = await speak(ws, "k", "Hi. ")
        assert np.frombuffer(audio_of(messages, "k"), dtype="<i2").size > 0
