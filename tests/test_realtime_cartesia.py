"""Cartesia's realtime WebSocket (``/tts/websocket``) through a real ``flashtts serve`` on the tiny Spark
model, driven by a real WebSocket client (the ``websockets`` package).

Every receive is bounded (READ_TIMEOUT): a server that hangs fails the test instead of stalling the run.
"""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import time
from typing import Optional

import httpx
import numpy as np
import pytest
from websockets.asyncio.client import connect

from conftest import Server, assert_refused, start_server, torch_server_args

READ_TIMEOUT = 60.0
KEY = "rt-secret"
MAX_PENDING = 20  # above the 16 contexts one socket may hold, so both limits can be reached
RATE = 16000  # tiny Spark's own rate
# About 30 s of audio for the tiny model, which never stops before its speaking-rate bound.
LONG_TEXT = " ".join(["Somewhere beyond the distant mountains the travellers kept walking."] * 4)
PIECES = ["Hello there, my ", "friend. How are", " you today?"]


@pytest.fixture(scope="module")
def server(tiny_spark, tmp_path_factory) -> Server:
    tmp = tmp_path_factory.mktemp("realtime")
    flags = ["--llm_device", "cpu", "--tokenizer_device", "cpu", "--detokenizer_device", "cpu"]
    flags += ["--api_key", KEY, "--max_pending_requests", str(MAX_PENDING)]
    srv = start_server(torch_server_args(tiny_spark, tmp, *flags), tmp)
    yield srv
    srv.stop()


def ws_url(server: Server, query: str = "cartesia_version=2025-04-16") -> str:
    return f"ws://127.0.0.1:{server.port}/tts/websocket" + (f"?{query}" if query else "")


def opened(server: Server, **kwargs):
    headers = kwargs.pop("headers", {"X-API-Key": KEY, "Cartesia-Version": "2025-04-16"})
    return connect(ws_url(server, **kwargs), additional_headers=headers, open_timeout=READ_TIMEOUT)


def request(context_id: str, transcript: str, more: bool, encoding="pcm_s16le", rate=RATE, **extra) -> str:
    return json.dumps(
        {
            "context_id": context_id,
            "transcript": transcript,
            "continue": more,
            "model_id": "sonic-2",
            "language": "en",
            "voice": {"mode": "id", "id": "female"},
            "output_format": {"container": "raw", "encoding": encoding, "sample_rate": rate},
            "some_future_field": {"ignored": True},
            **extra,
        }
    )


async def receive(ws) -> dict:
    message = json.loads(await asyncio.wait_for(ws.recv(), READ_TIMEOUT))
    for key in ("type", "context_id", "done", "status_code"):  # Pipecat indexes these on every message
        assert key in message, message
    return message


async def until_done(ws, context_ids: set[str]) -> list[dict]:
    """Every message until each of ``context_ids`` has had its done (or error) message."""
    messages, open_ids = [], set(context_ids)
    while open_ids:
        message = await receive(ws)
        messages.append(message)
        if message["done"]:
            open_ids.discard(message["context_id"])
    return messages


def audio_of(messages: list[dict], context_id: str) -> bytes:
    return b"".join(
        base64.b64decode(m["data"]) for m in messages if m["type"] == "chunk" and m["context_id"] == context_id
    )


def active_generations(server: Server) -> int:
    r = httpx.get(f"{server.url}/server_info", headers={"Authorization": f"Bearer {KEY}"}, timeout=10)
    r.raise_for_status()
    return r.json()["active_generations"]


# -- pure helpers -----------------------------------------------------------------------------------
def test_g711_matches_the_reference_codec():
    audioop = pytest.importorskip("audioop")  # the ITU-T reference in Python's stdlib up to 3.12
    from flashtts_server.realtime.cartesia import _alaw, _mulaw

    pcm = np.arange(-32768, 32768, dtype=np.int16)
    assert _mulaw(pcm).tobytes() == audioop.lin2ulaw(pcm.tobytes(), 2)
    assert _alaw(pcm).tobytes() == audioop.lin2alaw(pcm.tobytes(), 2)


def test_word_timings_spread_by_characters():
    from flashtts_server.realtime.session import spread_words

    t = spread_words("a bbb", 1.0, 2.0)
    assert t.words == ["a", "bbb"]
    assert t.start == [1.0, 1.25] and t.end == [1.25, 2.0]
    assert spread_words("   ", 0.0, 1.0).words == []
    assert spread_words("你好, world.", 0.0, 1.0).words == ["你", "好", ",", "world."]  # CJK: a word per character


def test_engine_word_timings_map_onto_the_transcript_words_or_fall_back():
    from flashtts_core.request import WordTiming
    from flashtts_server.realtime.session import engine_words

    mega = [WordTiming("hello,", 0.08, 0.3), WordTiming("World!", 0.3, 0.71)]
    t = engine_words("Hello, world.", 2.0, 2.7, mega)  # punctuation and case do not matter
    assert t is not None and t.words == ["Hello,", "world."] and not t.estimated
    assert t.start == pytest.approx([2.08, 2.3]) and t.end == pytest.approx([2.3, 2.7])  # the span's measured end
    inexact = [
        WordTiming("你", 0.1, 0.3, exact=False),
        WordTiming("好", 0.3, 0.5, exact=False),
        WordTiming("，", 0.5, 0.6),
    ]
    cjk = engine_words("你好,", 0.0, 0.6, inexact)  # a word per CJK character; full-width punctuation is ASCII's
    assert cjk is not None and cjk.words == ["你", "好", ","] and cjk.estimated
    assert (
        engine_words("I have 3 cats.", 0.0, 1.0, [WordTiming(w, 0, 0) for w in ["I", "have", "three", "cats."]]) is None
    )
    assert engine_words("Hi there.", 0.0, 1.0, [WordTiming("Hi", 0.0, 0.5)]) is None


# -- the socket -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "encoding,rate,width",
    [("pcm_s16le", 16000, 2), ("pcm_mulaw", 8000, 1), ("pcm_f32le", 24000, 4)],
)
async def test_pieces_then_end_give_chunks_timestamps_done(server, encoding, rate, width):
    async with opened(server) as ws:
        await ws.send(request("ctx", PIECES[0], True, encoding, rate, add_timestamps=True))
        await ws.send(request("ctx", PIECES[1], True, encoding, rate, add_timestamps=True))
        clause_complete = time.perf_counter()  # "…friend. " is a whole sentence now
        await ws.send(request("ctx", PIECES[2], True, encoding, rate, add_timestamps=True))
        first = await receive(ws)
        first_audio = time.perf_counter() - clause_complete
        await ws.send(request("ctx", " ", False, encoding, rate, add_timestamps=True))  # LiveKit's end packet
        messages = [first] + await until_done(ws, {"ctx"})
    print(f"\n{encoding}@{rate}: first audio {first_audio:.3f} s after the first sentence was complete")
    assert first["type"] == "chunk", first
    assert all(m["context_id"] == "ctx" for m in messages)
    assert messages[-1]["type"] == "done" and messages[-1]["status_code"] == 200
    assert [m for m in messages if m["done"]] == [messages[-1]]
    assert all(m["type"] in ("chunk", "timestamps") for m in messages[:-1])
    assert all(m["data"] for m in messages if m["type"] == "chunk")

    data = audio_of(messages, "ctx")
    assert len(data) % width == 0
    seconds = len(data) / width / rate
    assert 1.0 < seconds < 60.0, seconds  # two sentences (tiny model: up to their speaking-rate bounds)
    if encoding == "pcm_f32le":
        samples = np.frombuffer(data, dtype="<f4")
        assert np.isfinite(samples).all() and np.abs(samples).max() <= 1.0 + 1e-6
    elif encoding == "pcm_s16le":
        assert np.abs(np.frombuffer(data, dtype="<i2")).max() > 0

    # Word timings: every word of the text, in order, monotonic, inside the audio sent.
    stamps = [m["word_timestamps"] for m in messages if m["type"] == "timestamps"]
    assert len(stamps) == 2  # one per sentence
    words = [w for s in stamps for w in s["words"]]
    assert words == "".join(PIECES).split()
    starts = [t for s in stamps for t in s["start"]]
    ends = [t for s in stamps for t in s["end"]]
    assert starts[0] == 0.0 and all(a <= b for a, b in zip(starts, ends))
    assert all(e <= s2 + 1e-6 for e, s2 in zip(ends, starts[1:]))
    assert ends[-1] == pytest.approx(seconds, abs=1e-3)
    assert all(m.get("timestamps_estimated") for m in messages if m["type"] == "timestamps")


async def test_two_contexts_on_one_socket_run_concurrently(server):
    async with opened(server) as ws:
        await ws.send(request("a", "The first context speaks this sentence. And then another one.", False))
        await ws.send(request("b", "The second context speaks at the same time. With its own words.", False))
        messages = await until_done(ws, {"a", "b"})
    done_at = {m["context_id"]: i for i, m in enumerate(messages) if m["type"] == "done"}
    first_chunk = {}
    for i, m in enumerate(messages):
        if m["type"] == "chunk":
            first_chunk.setdefault(m["context_id"], i)
    assert set(done_at) == {"a", "b"}
    assert audio_of(messages, "a") and audio_of(messages, "b")
    # Neither waited for the other to finish: both had audio out before either was done.
    assert max(first_chunk.values()) < min(done_at.values()), (first_chunk, done_at)
    # Each context is a request in /metrics, under the socket's route.
    metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    for family in (
        "flashtts_requests_total",
        "flashtts_time_to_first_audio_seconds_count",
        "flashtts_audio_seconds_total",
    ):
        assert any(line.startswith(family + "{") and 'route="/tts/websocket"' in line for line in metrics.splitlines())


async def test_cancel_stops_at_once_and_frees_the_generation(server):
    async with opened(server) as ws:
        await ws.send(request("long", LONG_TEXT, False))
        first = await receive(ws)
        assert first["type"] == "chunk" and first["context_id"] == "long"
        assert active_generations(server) == 1
        await ws.send(json.dumps({"context_id": "long", "cancel": True}))
        cancelled = time.perf_counter()
        while active_generations(server) != 0:
            assert time.perf_counter() - cancelled < 1.0, "the generation was not freed"
            await asyncio.sleep(0.02)
        freed = time.perf_counter() - cancelled
        # The socket serves on. The cancel was handled before this request: any message for "long" still
        # arriving was sent before it, so nothing for "long" may come after "next"'s first message.
        await ws.send(request("next", "A short one.", False))
        messages = await until_done(ws, {"next"})
    print(f"\ncancel: generation freed {freed * 1000:.0f} ms after the cancel was sent")
    first_next = next(i for i, m in enumerate(messages) if m["context_id"] == "next")
    assert all(m["context_id"] == "next" for m in messages[first_next:])
    assert all(m["type"] == "chunk" for m in messages[:first_next])  # no done, no error for "long"
    assert messages[-1]["type"] == "done"
    assert active_generations(server) == 0


async def test_closing_the_socket_cancels_its_contexts(server):
    async with opened(server) as ws:
        await ws.send(request("long", LONG_TEXT, False))
        assert (await receive(ws))["type"] == "chunk"
    deadline = time.perf_counter() + 5
    while active_generations(server) != 0:
        assert time.perf_counter() < deadline, "closing the socket did not free the generation"
        await asyncio.sleep(0.05)


async def test_bad_messages_are_errors_for_their_context_only(server):
    async def error_for(ws, raw: str) -> dict:
        await ws.send(raw)
        message = await receive(ws)
        while message["type"] == "chunk" and message["context_id"] == "good":
            message = await receive(ws)
        assert message["type"] == "error" and message["done"] is True, message
        assert message["error"]
        return message

    async with opened(server) as ws:
        await ws.send(request("good", "This context keeps going,", True, flush=False))
        assert (await error_for(ws, "{not json"))["context_id"] is None
        assert (await error_for(ws, "[1, 2]"))["status_code"] == 400
        assert (await error_for(ws, request("", "Hello.", False)))["status_code"] == 400
        assert (await error_for(ws, json.dumps({"transcript": "Hello."})))["status_code"] == 400
        assert (await error_for(ws, request("x" * 300, "Hello.", False)))["context_id"] is None  # too long to echo
        bad_voice = json.loads(request("v", "Hello.", False))
        bad_voice["voice"]["id"] = "nobody-by-this-name"
        m = await error_for(ws, json.dumps(bad_voice))
        assert (m["context_id"], m["status_code"]) == ("v", 404)
        m = await error_for(ws, request("e", "Hello.", False, encoding="mp3"))
        assert (m["context_id"], m["status_code"]) == ("e", 400)
        m = await error_for(ws, request("r", "Hello.", False, rate=4000))
        assert (m["context_id"], m["status_code"]) == ("r", 400)
        m = await error_for(ws, request("t", 42, False))
        assert (m["context_id"], m["status_code"]) == ("t", 400)
        embedding = json.loads(request("m", "Hello.", False))
        embedding["voice"] = {"mode": "embedding", "embedding": [0.1] * 4}
        assert (await error_for(ws, json.dumps(embedding)))["context_id"] == "m"
        m = await error_for(ws, request("big", "x " * 3000, True))  # over --max_text_length (4096)
        assert (m["context_id"], m["status_code"]) == ("big", 413)
        # The good context was never disturbed: a flush speaks what it has, then it ends.
        await ws.send(request("good", " and it is flushed", True, flush=True))
        await ws.send(request("good", ". The end.", False))
        messages = await until_done(ws, {"good"})
    kinds = [m["type"] for m in messages if m["context_id"] == "good"]
    assert "flush_done" in kinds and kinds[-1] == "done"
    flush = next(m for m in messages if m["type"] == "flush_done")
    assert flush["flush_id"] == 1
    assert "chunk" in kinds[: kinds.index("flush_done")] and "chunk" in kinds[kinds.index("flush_done") :]
    assert audio_of(messages, "good")


async def test_context_and_pending_limits(server):
    """16 contexts per socket (then 429); --max_pending_requests across sockets (then 503)."""
    async with opened(server) as first, opened(server) as second:
        for i in range(16):
            await first.send(request(f"c{i}", "", True))  # open, nothing to say yet: no generation
        await first.send(request("c16", "", True))
        m = await receive(first)
        assert (m["type"], m["context_id"], m["status_code"]) == ("error", "c16", 429)
        for i in range(MAX_PENDING - 16):
            await second.send(request(f"d{i}", "", True))
        await second.send(request("over", "Hello.", False))
        m = await receive(second)
        assert (m["type"], m["context_id"], m["status_code"]) == ("error", "over", 503)
        for i in range(16):
            await first.send(json.dumps({"context_id": f"c{i}", "cancel": True}))
        await first.send("{")  # messages are handled in order: its error means every cancel is done
        assert (await receive(first))["type"] == "error"
        # Room again: a context runs to its end.
        await second.send(request("after", "Room again.", False))
        messages = await until_done(second, {"after"})
        assert messages[-1]["type"] == "done" and audio_of(messages, "after")


@pytest.mark.parametrize(
    "headers,query,ok",
    [
        ({}, None, False),
        ({"X-API-Key": "wrong"}, None, False),
        ({"X-API-Key": KEY}, None, True),
        ({"Authorization": f"Bearer {KEY}"}, None, True),
        ({}, f"api_key={KEY}&cartesia_version=2025-04-16", True),
    ],
    ids=["no-key", "wrong-key", "x-api-key", "bearer", "query"],
)
async def test_api_key(server, headers: dict, query: Optional[str], ok: bool):
    connection = opened(server, headers=headers, query=query or "cartesia_version=2025-04-16")
    if not ok:
        await assert_refused(connection)
        return
    async with connection as ws:
        await ws.send(request("k", "Hi.", False))
        messages = await until_done(ws, {"k"})
        assert messages[-1]["type"] == "done"


@pytest.fixture(scope="module")
def limited_server(tiny_spark, tmp_path_factory) -> Server:
    """No --api_key (any key passes), short idle and send timeouts; the last test here shuts it down."""
    tmp = tmp_path_factory.mktemp("realtime-limited")
    flags = ["--llm_device", "cpu", "--tokenizer_device", "cpu", "--detokenizer_device", "cpu"]
    flags += ["--realtime_idle_timeout", "1", "--realtime_send_timeout", "2"]
    srv = start_server(torch_server_args(tiny_spark, tmp, *flags), tmp)
    yield srv
    srv.stop()


async def test_an_idle_socket_is_closed(limited_server):
    async with opened(limited_server, headers={"X-API-Key": "any key passes without --api_key"}) as ws:
        started = time.perf_counter()
        await asyncio.wait_for(ws.wait_closed(), 10)
        assert 0.9 < time.perf_counter() - started < 5
        assert ws.close_code == 1000


async def test_a_client_that_stops_reading_is_given_up(limited_server):
    """Back-pressure: unread audio stalls the contexts (bounded buffers), then the socket is closed."""
    import socket

    sock = socket.create_connection(("127.0.0.1", limited_server.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    ws = await connect(ws_url(limited_server), sock=sock, max_queue=1, open_timeout=READ_TIMEOUT)
    try:
        for name in ("s1", "s2"):
            await ws.send(request(name, LONG_TEXT, False, encoding="pcm_f32le", rate=48000))
        deadline = time.perf_counter() + 45
        while "left its audio unread" not in limited_server.output():
            assert time.perf_counter() < deadline, "the stalled socket was not given up"
            await asyncio.sleep(0.2)
        while active_generations(limited_server) != 0:
            assert time.perf_counter() < deadline, "the stalled contexts were not cancelled"
            await asyncio.sleep(0.1)
    finally:
        ws.transport.abort()


async def test_graceful_shutdown_lets_a_running_context_finish(limited_server):
    """SIGTERM: a context that is speaking runs to its done; a new one is refused (503); then the server exits."""
    srv = limited_server
    try:
        async with opened(srv, headers={"Authorization": "Bearer anything"}) as ws:
            await ws.send(request("running", "This one is speaking. It has two sentences.", False))
            assert (await receive(ws))["type"] == "chunk"
            srv.proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.3)
            await ws.send(request("new", "Too late.", False))
            messages = await until_done(ws, {"running", "new"})
        refused = next(m for m in messages if m["context_id"] == "new")
        assert (refused["type"], refused["status_code"]) == ("error", 503)
        assert [m["type"] for m in messages if m["context_id"] == "running"][-1] == "done"
        assert srv.proc.wait(timeout=30) == 0
    finally:
        srv.stop()
