"""Home Assistant's Wyoming protocol through a real ``flashtts serve --wyoming_port`` on the tiny Spark,
Orpheus and MegaTTS3 models, driven by the ``wyoming`` package's own client (AsyncTcpClient).

Every read is bounded (READ_TIMEOUT): a server that hangs fails the test instead of stalling the run.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import httpx
import numpy as np
import pytest
from wyoming.audio import AudioChunk, AudioStart
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.event import Event, async_read_event
from wyoming.info import Describe, Info
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeVoice

from conftest import Server, free_port, start_server, tone_wav

READ_TIMEOUT = 60.0
MAX_TEXT = 400
MAX_CONNECTIONS = 8
MAX_PENDING = 2
# About 30 s of audio for the tiny models, which never stop before their speaking-rate bound.
LONG_TEXT = " ".join(["Somewhere beyond the distant mountains the travellers kept walking."] * 4)
ENGINES = {
    # engine: (rate, built-in voice or None, whether a role is saved, languages)
    "spark": (16000, "female", True, ["en", "zh"]),
    "orpheus": (24000, "tara", False, ["en"]),  # Orpheus has no cloning: no saved voices
    "mega": (24000, None, True, ["en", "zh"]),  # MegaTTS3 has no built-in voices: only saved ones
}
ROLE = "narrator"


# -- servers ---------------------------------------------------------------------------------------
def serve_args(engine: str, model: Path, roles: Path, wyoming_port: int) -> list[str]:
    args = [
        "--model_path",
        str(model),
        "--backend",
        "torch",
        "--role_dir",
        str(roles),
        "--wyoming_port",
        str(wyoming_port),
    ]
    return args + ["--llm_device", "cpu", "--tokenizer_device", "cpu", "--detokenizer_device", "cpu"]


@pytest.fixture(scope="module")
def launch(request, tmp_path_factory):
    """``launch(engine)``: that engine's server with --wyoming_port (started once per module), with the
    saved role ``narrator`` where the engine can clone."""
    servers: dict[str, Server] = {}

    def _launch(engine: str) -> Server:
        if engine in servers:
            return servers[engine]
        model = request.getfixturevalue(f"tiny_{engine}")
        tmp = tmp_path_factory.mktemp(f"wyoming-{engine}")
        port = free_port()
        args = serve_args(engine, model, tmp / "roles", port)
        args += ["--max_text_length", str(MAX_TEXT), "--wyoming_max_connections", str(MAX_CONNECTIONS)]
        args += ["--max_pending_requests", str(MAX_PENDING)]
        server = start_server(args, tmp)
        server.wyoming_port = port
        servers[engine] = server
        if ENGINES[engine][2]:
            files = {"audio_file": ("voice.wav", tone_wav(freq=200.0))}
            if engine == "mega":
                files = {
                    "audio_file": ("example.wav", (model / "example.wav").read_bytes()),
                    "latent_file": ("example.npy", (model / "example.npy").read_bytes()),
                }
            with server.client() as client:
                r = client.post("/add_speaker", data={"name": ROLE}, files=files)
                assert r.status_code == 200, r.text
        return server

    yield _launch
    for server in servers.values():
        server.stop()


@pytest.fixture
def spark(launch) -> Server:
    return launch("spark")


# -- the client side -------------------------------------------------------------------------------
@dataclass
class Reply:
    events: list[tuple[float, Event]] = field(default_factory=list)  # (seconds since sent, event)
    closed: bool = False  # the server ended the connection

    def of(self, kind: str) -> list[Event]:
        return [e for _, e in self.events if e.type == kind]

    @property
    def kinds(self) -> list[str]:
        return [e.type for _, e in self.events]

    def first(self, kind: str) -> float:
        return next(t for t, e in self.events if e.type == kind)

    def audio(self) -> np.ndarray:
        return np.frombuffer(b"".join(AudioChunk.from_event(e).audio for e in self.of("audio-chunk")), "<i2")

    def error(self) -> Error:
        errors = self.of("error")
        assert errors, f"no error event: {self.kinds}"
        return Error.from_event(errors[0])


async def read_until(client: AsyncTcpClient, reply: Reply, started: float, *ends: str) -> Reply:
    """Events until one of ``ends``, an error or the end of the connection."""
    while True:
        event = await asyncio.wait_for(client.read_event(), READ_TIMEOUT)
        if event is None:
            reply.closed = True
            return reply
        reply.events.append((time.perf_counter() - started, event))
        if event.type in ends or event.type == "error":
            return reply


async def exchange(port: int, *events: Event, ends: tuple[str, ...] = ("audio-stop",)) -> Reply:
    async with AsyncTcpClient("127.0.0.1", port) as client:
        started = time.perf_counter()
        for event in events:
            await client.write_event(event)
        reply = await read_until(client, Reply(), started, *ends)
        if reply.kinds and reply.kinds[-1] == "error" and not reply.closed:
            reply.closed = await asyncio.wait_for(client.read_event(), READ_TIMEOUT) is None
        return reply


async def describe(port: int) -> Info:
    reply = await exchange(port, Describe().event(), ends=("info",))
    return Info.from_event(reply.of("info")[0])


def synthesize(text: str, voice: Optional[str] = None, **data) -> Event:
    event = Synthesize(text=text, voice=SynthesizeVoice(name=voice) if voice else None).event()
    event.data.update(data)
    return event


def check_audio(reply: Reply, rate: int) -> np.ndarray:
    """One audio-start at ``rate`` (16-bit mono), chunks in the same format, audio-stop; the samples."""
    assert reply.kinds.count("audio-start") == 1 and reply.kinds[0] == "audio-start", reply.kinds
    start = AudioStart.from_event(reply.of("audio-start")[0])
    assert (start.rate, start.width, start.channels) == (rate, 2, 1)
    chunks = [AudioChunk.from_event(e) for e in reply.of("audio-chunk")]
    assert chunks and all((c.rate, c.width, c.channels) == (rate, 2, 1) for c in chunks)
    assert reply.of("audio-stop"), reply.kinds
    audio = reply.audio()
    assert audio.size > rate // 2 and np.abs(audio).max() > 0
    return audio


def voice_cases() -> list:
    cases = []
    for engine, (_, builtin, role, _) in ENGINES.items():
        if builtin:
            cases.append(pytest.param(engine, builtin, id=f"{engine}-builtin-{builtin}"))
        if role:
            cases.append(pytest.param(engine, ROLE, id=f"{engine}-saved-{ROLE}"))
    return cases


def metric(server: Server, line_start: str) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start)]
    return sum(values)


# -- describe --------------------------------------------------------------------------------------
@pytest.mark.parametrize("engine", list(ENGINES))
async def test_describe_lists_one_streaming_program_with_every_voice(launch, engine):
    server = launch(engine)
    rate, builtin, role, languages = ENGINES[engine]
    info = await describe(server.wyoming_port)
    assert len(info.tts) == 1
    program = info.tts[0]
    assert program.name == "flashtts" and program.installed and program.supports_synthesize_streaming
    names = [v.name for v in program.voices]
    if builtin:
        assert builtin in names
    assert (ROLE in names) == role
    assert all(v.installed and v.languages == languages and v.description for v in program.voices)


async def test_describe_follows_roles_added_and_deleted(spark):
    before = [v.name for v in (await describe(spark.wyoming_port)).tts[0].voices]
    assert before[:2] == ["female", "male"] and "guest" not in before
    with spark.client() as client:
        added = client.post("/add_speaker", data={"name": "guest"}, files={"audio_file": ("g.wav", tone_wav(freq=150))})
        assert added.status_code == 200, added.text
        voices = {v.name: v for v in (await describe(spark.wyoming_port)).tts[0].voices}
        assert "guest" in voices and "saved voice" in voices["guest"].description
        reply = await exchange(spark.wyoming_port, synthesize("Hi.", "guest"))
        check_audio(reply, 16000)
        assert client.post("/delete_speaker", data={"name": "guest"}).status_code == 200
    after = [v.name for v in (await describe(spark.wyoming_port)).tts[0].voices]
    assert "guest" not in after


# -- synthesize ------------------------------------------------------------------------------------
@pytest.mark.parametrize("engine, voice", voice_cases())
async def test_synthesize_streams_the_audio_as_it_is_made(launch, engine, voice):
    server = launch(engine)
    rate = ENGINES[engine][0]
    reply = await exchange(server.wyoming_port, synthesize("Hello there.", voice))
    assert not reply.closed
    check_audio(reply, rate)
    first, stop = reply.first("audio-chunk"), reply.first("audio-stop")
    print(f"\n{engine} {voice}: first audio-chunk after {first:.3f} s, audio-stop after {stop:.3f} s")
    if engine != "mega":  # MegaTTS3 decodes a segment whole: one chunk per sentence
        assert len(reply.of("audio-chunk")) > 1 and stop - first > 0.1


async def test_no_voice_named_is_the_default_voice(launch):
    # Spark: its first built-in voice; MegaTTS3 (no built-in voices): the first saved one.
    for engine in ("spark", "mega"):
        server = launch(engine)
        check_audio(await exchange(server.wyoming_port, synthesize("Hi.")), ENGINES[engine][0])


async def test_audio_is_resampled_when_a_rate_is_asked_for(spark):
    native = check_audio(await exchange(spark.wyoming_port, synthesize("Hello there.", "male")), 16000)
    asked = check_audio(
        await exchange(spark.wyoming_port, synthesize("Hello there.", "male", sample_rate=24000)), 24000
    )
    assert abs(asked.size / 24000 - native.size / 16000) < 0.05


@pytest.mark.parametrize("engine, voice", voice_cases())
async def test_a_streamed_reply_is_spoken_sentence_by_sentence(launch, engine, voice):
    server = launch(engine)
    rate = ENGINES[engine][0]
    async with AsyncTcpClient("127.0.0.1", server.wyoming_port) as client:
        started = time.perf_counter()
        await client.write_event(SynthesizeStart(voice=SynthesizeVoice(name=voice)).event())
        for piece in ["Hello", " there.", " And"]:
            await client.write_event(SynthesizeChunk(text=piece).event())
        # The first sentence is complete: its audio comes while the rest of the reply is still unwritten.
        reply = await read_until(client, Reply(), started, "audio-chunk")
        assert reply.kinds[-1] == "audio-chunk", reply.kinds
        sent_first = time.perf_counter() - started
        await client.write_event(SynthesizeChunk(text=" goodbye.").event())
        # What Home Assistant sends inside a stream for servers that do not stream: ignored here.
        await client.write_event(Synthesize(text="Hello there. And goodbye.").event())
        await client.write_event(SynthesizeStop().event())
        await read_until(client, reply, started, "synthesize-stopped")
    assert reply.kinds[-2:] == ["audio-stop", "synthesize-stopped"], reply.kinds
    audio = check_audio(reply, rate)
    assert reply.first("audio-chunk") <= sent_first
    print(
        f"\n{engine} {voice} stream: first audio-chunk after {reply.first('audio-chunk'):.3f} s, {audio.size / rate:.2f} s"
    )


# -- bad input -------------------------------------------------------------------------------------
def event(kind: str, **data) -> Event:
    return Event(type=kind, data=data)


BAD_EVENTS = {
    "unknown voice": ([synthesize("Hi.", "nobody")], "not_found"),
    "empty text": ([synthesize("   ")], "invalid_request"),
    "text over --max_text_length": ([synthesize("word " * 100)], "payload_too_large"),
    "text not a string": ([event("synthesize", text=5)], "invalid_request"),
    "no text": ([event("synthesize", voice={"name": "female"})], "malformed_event"),
    "voice name not a string": ([event("synthesize", text="Hi.", voice={"name": 5})], "invalid_request"),
    "sample rate out of range": ([synthesize("Hi.", sample_rate=5)], "invalid_request"),
    "data not an object": ([Event("synthesize", data=[1])], "malformed_event"),
    "chunk outside a stream": ([SynthesizeChunk(text="Hi.").event()], "malformed_event"),
    "stop outside a stream": ([SynthesizeStop().event()], "malformed_event"),
    "stream without text": ([SynthesizeStart().event(), SynthesizeStop().event()], "invalid_request"),
    "streamed text over --max_text_length": (
        [SynthesizeStart().event(), SynthesizeChunk(text="word " * 90).event()],
        "payload_too_large",
    ),
    "a stream inside a stream": ([SynthesizeStart().event(), SynthesizeStart().event()], "malformed_event"),
}
BAD_BYTES = {
    "garbage": (b"\x00\xff\xfe not json at all\n", "malformed_event"),
    "JSON that is not an object": (b"[1, 2, 3]\n", "malformed_event"),
    "an event without a type": (b'{"data": {"text": "Hi."}}\n', "malformed_event"),
    "a length that is not a number": (b'{"type": "synthesize", "data_length": "ten"}\n', "malformed_event"),
    "data over the event limit": (b'{"type": "synthesize", "data_length": 2000000}\n', "payload_too_large"),
    "payload over the event limit": (b'{"type": "audio-chunk", "payload_length": 99999999}\n', "payload_too_large"),
    "a header line over the limit": (b"{" + b" " * 70_000 + b"}\n", "payload_too_large"),
}


async def raw_exchange(port: int, data: bytes) -> Reply:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    reply = Reply()
    try:
        writer.write(data)
        await writer.drain()
        while True:
            event = await asyncio.wait_for(async_read_event(reader), READ_TIMEOUT)
            if event is None:
                reply.closed = True
                return reply
            reply.events.append((0.0, event))
    finally:
        writer.close()


@pytest.mark.parametrize("case", list(BAD_EVENTS))
async def test_bad_events_get_an_error_and_the_connection_closes(spark, case):
    events, code = BAD_EVENTS[case]
    reply = await exchange(spark.wyoming_port, *events)
    assert reply.error().code == code and reply.error().text
    assert reply.closed and "audio-chunk" not in reply.kinds
    assert (await describe(spark.wyoming_port)).tts[0].voices  # the listener serves the next client


@pytest.mark.parametrize("case", list(BAD_BYTES))
async def test_bytes_that_are_no_event_get_an_error_and_the_connection_closes(spark, case):
    data, code = BAD_BYTES[case]
    reply = await raw_exchange(spark.wyoming_port, data)
    assert [e.type for _, e in reply.events] == ["error"] and reply.closed
    assert reply.error().code == code
    assert (await describe(spark.wyoming_port)).tts[0].voices


async def test_unknown_events_are_ignored_and_ping_is_answered(spark):
    reply = await exchange(spark.wyoming_port, event("transcribe"), event("ping", text="x"), ends=("pong",))
    assert reply.kinds == ["pong"] and reply.of("pong")[0].data["text"] == "x"


async def test_a_bad_client_does_not_disturb_a_good_one(spark):
    good = asyncio.ensure_future(exchange(spark.wyoming_port, synthesize("Hello there.", "female")))
    bad = await asyncio.gather(*(raw_exchange(spark.wyoming_port, b"\x00garbage\n") for _ in range(5)))
    assert all(r.error().code == "malformed_event" for r in bad)
    check_audio(await good, 16000)


# -- a client that leaves, limits, admission -------------------------------------------------------
def idle_within(server: Server, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if httpx.get(f"{server.url}/server_info", timeout=10).json()["active_generations"] == 0:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("streamed", [False, True], ids=["synthesize", "synthesize-stream"])
async def test_a_client_that_leaves_mid_audio_frees_its_generation(spark, streamed):
    left = metric(spark, 'flashtts_requests_total{route="wyoming",status="499"}')
    async with AsyncTcpClient("127.0.0.1", spark.wyoming_port) as client:
        started = time.perf_counter()
        if streamed:
            await client.write_event(SynthesizeStart(voice=SynthesizeVoice(name="female")).event())
            await client.write_event(SynthesizeChunk(text=LONG_TEXT + " ").event())
        else:
            await client.write_event(synthesize(LONG_TEXT, "female"))
        reply = await read_until(client, Reply(), started, "audio-chunk")
        assert reply.kinds[-1] == "audio-chunk"
        assert httpx.get(f"{spark.url}/server_info", timeout=10).json()["active_generations"] == 1
    # About 30 s of audio would take many seconds more: leaving frees the engine at once.
    assert idle_within(spark, 5.0)
    assert metric(spark, "flashtts_pending_requests") == 0
    assert metric(spark, 'flashtts_requests_total{route="wyoming",status="499"}') == left + 1
    check_audio(await exchange(spark.wyoming_port, synthesize("Next.", "male")), 16000)


async def test_connections_over_the_cap_get_an_error(spark):
    await asyncio.sleep(0.2)  # connections of earlier tests are closed
    clients = [AsyncTcpClient("127.0.0.1", spark.wyoming_port) for _ in range(MAX_CONNECTIONS)]
    try:
        for client in clients:
            await client.connect()
        for client in clients:  # each one is being served
            await client.write_event(event("ping"))
            assert (await asyncio.wait_for(client.read_event(), READ_TIMEOUT)).type == "pong"
        refused = await exchange(spark.wyoming_port, Describe().event(), ends=("info",))
        assert refused.error().code == "server_overloaded" and refused.closed
    finally:
        for client in clients:
            await client.disconnect()
    await asyncio.sleep(0.2)
    assert (await describe(spark.wyoming_port)).tts[0].voices


async def test_syntheses_past_max_pending_requests_are_refused_like_http(spark):
    clients = [AsyncTcpClient("127.0.0.1", spark.wyoming_port) for _ in range(MAX_PENDING)]
    rejected = metric(spark, 'flashtts_rejected_requests_total{reason="overloaded"}')
    try:
        for client in clients:
            await client.connect()
            await client.write_event(synthesize(LONG_TEXT, "female"))
            assert (await read_until(client, Reply(), time.perf_counter(), "audio-chunk")).kinds[-1] == "audio-chunk"
        assert metric(spark, "flashtts_pending_requests") == MAX_PENDING
        refused = await exchange(spark.wyoming_port, synthesize("Hi.", "male"))
        assert refused.error().code == "server_overloaded" and refused.closed
        over_http = httpx.post(f"{spark.url}/speak", json={"name": "male", "text": "Hi."}, timeout=30)
        assert over_http.status_code == 503  # one count for both protocols
    finally:
        for client in clients:
            await client.disconnect()
    assert idle_within(spark, 5.0)
    assert metric(spark, 'flashtts_rejected_requests_total{reason="overloaded"}') == rejected + 2
    assert metric(spark, 'flashtts_requests_total{route="wyoming",status="200"}') >= 1
    assert metric(spark, 'flashtts_time_to_first_audio_seconds_count{route="wyoming"}') >= 1
    assert metric(spark, 'flashtts_audio_seconds_total{route="wyoming"}') > 0


# -- shutdown and startup --------------------------------------------------------------------------
def spawn(args: list[str], tmp_path: Path) -> Server:
    """``flashtts serve`` started without waiting for it (conftest's start_server waits for the model)."""
    port = free_port()
    log = tmp_path / f"server-{port}.log"
    cmd = [sys.executable, "-m", "flashtts_server.cli", "serve", "--host", "127.0.0.1", "--port", str(port), *args]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=tmp_path)
    return Server(proc, port, log)


async def wait_for(check, what: str, seconds: float = 120.0) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, f"{what} did not happen in {seconds} s"
        await asyncio.sleep(0.05)


async def test_refused_while_loading_and_after_sigterm_an_open_stream_finishes(tiny_spark, tmp_path):
    port = free_port()
    server = spawn(serve_args("spark", tiny_spark, tmp_path / "roles", port), tmp_path)

    async def listening() -> bool:
        assert server.proc.poll() is None, server.output()[-3000:]
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return False
        writer.close()
        return True

    async def loaded() -> bool:
        async with httpx.AsyncClient() as client:
            try:
                return (await client.get(f"{server.url}/health", timeout=5)).json().get("status") == "ok"
            except httpx.HTTPError:  # the HTTP port opens a moment after the Wyoming port
                return False

    try:
        # The Wyoming port opens with the HTTP port, before the model is loaded (torch alone takes seconds to import).
        await wait_for(listening, "the Wyoming port opening")
        loading = await exchange(port, synthesize("Hi.", "male"))
        assert loading.error().code == "model_loading" and loading.closed
        await wait_for(loaded, "the model loading")
        async with AsyncTcpClient("127.0.0.1", port) as client:
            started = time.perf_counter()
            await client.write_event(SynthesizeStart(voice=SynthesizeVoice(name="female")).event())
            await client.write_event(SynthesizeChunk(text="Hello").event())
            await asyncio.sleep(0.3)  # the stream is accepted (pending) before the signal
            server.proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.5)
            refused = await exchange(port, synthesize("Hi.", "male"))
            assert refused.error().code == "shutting_down" and refused.closed
            await client.write_event(SynthesizeChunk(text=" there.").event())
            await client.write_event(SynthesizeStop().event())
            reply = await read_until(client, Reply(), started, "synthesize-stopped")
        assert reply.kinds[-2:] == ["audio-stop", "synthesize-stopped"]
        check_audio(reply, 16000)
        assert await asyncio.to_thread(server.proc.wait, 30) == 0
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        server.stop()


def test_a_wyoming_port_in_use_fails_the_start_and_replicas_are_refused(tiny_spark, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cmd = [sys.executable, "-m", "flashtts_server.cli", "serve", "--host", "127.0.0.1", "--port", str(free_port())]
        run = subprocess.run(
            [*cmd, *serve_args("spark", tiny_spark, tmp_path / "roles", port)],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )
    assert run.returncode == 3, run.stderr[-2000:]  # uvicorn's startup failure, as when the HTTP port is taken
    assert f"the Wyoming listener cannot listen on 127.0.0.1:{port}" in run.stderr
    replicas = subprocess.run(
        [*cmd, *serve_args("spark", tiny_spark, tmp_path / "roles", free_port()), "--replicas", "2"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert replicas.returncode == 2 and "--wyoming_port" in replicas.stderr
