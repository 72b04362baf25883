"""Home Assistant's Wyoming protocol: a TCP listener beside HTTP (``--wyoming_port``), in the same process,
on the same runtime, roles, admission, metrics and shutdown.

Built on the ``wyoming`` package's event types and its reader/writer (``async_read_event``,
``async_write_event``); only the limits around them are ours. One connection:

- ``describe`` → ``info``: one TTS program whose voices are the engine's built-in voices and the saved
  roles, listed from the role store at every ``describe`` (so added and deleted roles show at once).
- ``synthesize`` → ``audio-start``, ``audio-chunk`` … as the engine makes them, ``audio-stop``:
  16-bit mono at the model's rate, ``--wyoming_sample_rate``, or a ``sample_rate`` in the event's data.
- ``synthesize-start``, ``synthesize-chunk`` …, ``synthesize-stop`` (Home Assistant's streaming of an
  LLM's reply): each sentence is synthesized as soon as core's ``IncrementalSplitter`` says it is
  complete; one ``audio-start`` … ``audio-stop`` for the whole stream, then ``synthesize-stopped``. The
  ``synthesize`` Home Assistant sends inside a stream for older servers is ignored.
- ``ping`` → ``pong``; other events are ignored, as the protocol asks of servers.

An error is an ``error`` event (code as the HTTP routes' codes), after which the connection is closed:
clients (Home Assistant among them) wait for ``audio-stop`` or the end of the connection, never for
an error. Bytes that are no Wyoming event, an event over ``MAX_EVENT_BYTES`` and more connections than
``--wyoming_max_connections`` end the same way. A client that closes its side of the connection is
gone: its generation is cancelled at once, as an HTTP client's is.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, AsyncGenerator, AsyncIterator, Awaitable, Callable, Optional, cast

import numpy as np
from flashtts_core.errors import FlashTTSError, InvalidRequest, PayloadTooLarge
from flashtts_core.formats import float_to_int16
from flashtts_core.request import SynthesisRequest, VoiceReference
from flashtts_core.text_stream import IncrementalSplitter
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event, async_read_event, async_write_event
from wyoming.info import Attribution, Describe, Info, TtsProgram, TtsVoice
from wyoming.ping import Ping, Pong
from wyoming.tts import (
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStop,
    SynthesizeStopped,
    SynthesizeVoice,
)

from . import __version__
from .admission import admission_refusal
from .audio_response import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, resampled
from .errors import ServerOverloaded, ServiceLoading
from .request_id import REQUEST_ID as _request_id
from .synthesis_fields import check_text_length

if TYPE_CHECKING:
    from fastapi import FastAPI

    from .lifecycle import Lifecycle
    from .runtime import TTSRuntime
    from .settings import ServerSettings

logger = logging.getLogger("flashtts.wyoming")

PROGRAM = "flashtts"
ROUTE = "wyoming"  # the route label of Wyoming syntheses in /metrics
# A TTS server receives text only: an event's data and payload together stay under this, its JSON header
# line under HEADER_LIMIT (the stream reader's line limit).
MAX_EVENT_BYTES = 1 << 20
HEADER_LIMIT = 64 * 1024
# Whole requests a connection may queue behind the one being spoken.
MAX_QUEUED = 4
# A connection with nothing to do and nothing sent for this long is closed (so the cap cannot be held idle).
IDLE_SECONDS = 120.0
# After an error, what the client still sends is read away for at most this long (and this much), then closed.
LINGER_SECONDS = 2.0
LINGER_BYTES = 4 << 20
# Longest audio in one audio-chunk event.
CHUNK_SECONDS = 0.5
# Languages for an engine that does not declare its own (Engine.languages).
FALLBACK_LANGUAGES = ["en"]
# Client disconnected (nginx's code; the HTTP routes count a request abandoned before its answer so too).
CLIENT_GONE = 499


class WyomingListenError(FlashTTSError):
    """The Wyoming port cannot be opened (in use, no permission, an address this host lacks)."""

    code = "wyoming_listen_failed"


class EventTooLarge(Exception):
    """An event whose header line, data or payload is over the limits."""


class ProtocolError(Exception):
    """Bytes that are no Wyoming event, or events in an order the protocol does not have."""


class _LimitedReader:
    """The reader handed to ``async_read_event``: it reads through this, which refuses oversized parts."""

    def __init__(self, reader: asyncio.StreamReader):
        self.reader = reader

    async def readline(self) -> bytes:
        try:
            return await self.reader.readline()
        except ValueError:  # the stream reader's line limit
            raise EventTooLarge(f"an event's header line is over {HEADER_LIMIT} bytes") from None

    async def readexactly(self, n: int) -> bytes:
        if not isinstance(n, int) or n > MAX_EVENT_BYTES:
            raise EventTooLarge(f"an event's data or payload is {n} bytes; the limit is {MAX_EVENT_BYTES}")
        return await self.reader.readexactly(n)


class WyomingService:
    """The listener: accepts connections up to the cap and serves each with a :class:`WyomingConnection`."""

    def __init__(self, app: "FastAPI", settings: "ServerSettings"):
        self.app = app
        self.settings = settings
        self.host = settings.wyoming_host or settings.host
        self.port = settings.wyoming_port
        self._server: Optional[asyncio.base_events.Server] = None
        self._connections: set[asyncio.Task] = set()

    @property
    def lifecycle(self) -> "Lifecycle":
        return self.app.state.lifecycle

    @property
    def runtime(self) -> "Optional[TTSRuntime]":
        return self.app.state.runtime

    @property
    def metrics(self):
        return self.app.state.metrics

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port, limit=HEADER_LIMIT)
        logger.info("Wyoming text-to-speech on tcp://%s:%d", self.host, self.port)

    async def close(self) -> None:
        """Stop accepting, then end the connections still open (the drain before this let their syntheses
        finish; what is left is cut off)."""
        if self._server is not None:
            self._server.close()
        tasks = list(self._connections)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        logger.info("Wyoming listener closed")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None  # a stream handler always runs in a task
        peer = writer.get_extra_info("peername")
        where = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else str(peer)
        if len(self._connections) >= self.settings.wyoming_max_connections:
            self.metrics.reject("overloaded")
            logger.warning("Wyoming connection from %s refused: %d open", where, len(self._connections))
            error = ServerOverloaded(
                f"too many Wyoming connections (--wyoming_max_connections {self.settings.wyoming_max_connections})"
            )
            await _close(reader, writer, error_event(error))
            return
        self._connections.add(task)
        try:
            await WyomingConnection(self, reader, writer, where).run()
        except asyncio.CancelledError:
            pass  # the listener is closing; the finally below closes this connection
        except Exception:
            logger.exception("Wyoming %s: connection failed", where)
        finally:
            self._connections.discard(task)
            await _close(reader, writer)

    # -- what every connection shares ------------------------------------------------------------
    async def info(self) -> Info:
        runtime = self.runtime
        if runtime is None:
            refusal = admission_refusal(self.lifecycle, self.settings.max_pending_requests)
            raise refusal[1] if refusal else ServiceLoading("the model is still loading; try again shortly")
        engine = runtime.engine
        languages = list(getattr(engine, "languages", None) or FALLBACK_LANGUAGES)
        model = engine.model_path.name if engine.model_path is not None else engine.name
        attribution = Attribution(name=model, url="")
        roles = await runtime.saved_roles()  # read from the store each time: another replica may have changed it

        def voice(name: str, description: str) -> TtsVoice:
            return TtsVoice(
                name=name,
                attribution=attribution,
                installed=True,
                description=description,
                version=None,
                languages=languages,
            )

        voices = [voice(name, f"{name} ({model})") for name in engine.voices if name not in roles]
        voices += [voice(name, f"{name} (saved voice, {model})") for name in roles]
        program = TtsProgram(
            name=PROGRAM,
            attribution=Attribution(name="FlashTTS", url=""),
            installed=True,
            description=f"FlashTTS: {model} ({engine.name}, {engine.backend_name or 'unknown'} backend)",
            version=__version__,
            voices=voices,
            supports_synthesize_streaming=True,
        )
        return Info(tts=[program])

    async def default_voice(self, runtime: "TTSRuntime") -> tuple[Optional[str], Optional[VoiceReference]]:
        """No voice named: --default_voice, the engine's first voice, or (engines without any) the first role."""
        if self.settings.default_voice:
            return await runtime.resolve_voice(self.settings.default_voice)
        if runtime.engine.voices:
            return runtime.engine.voices[0], None
        roles = await runtime.saved_roles()
        if roles:
            return await runtime.resolve_voice(roles[0])
        raise InvalidRequest(
            f"engine {runtime.engine.name!r} has no built-in voices and no voice is saved yet: add one "
            "(POST /add_speaker) and name it",
            param="voice",
        )

    @asynccontextmanager
    async def admitted(self) -> AsyncIterator["TTSRuntime"]:
        """One synthesis counted as pending (what --max_pending_requests bounds and a shutdown waits for),
        or refused as HTTP admission refuses it."""
        refusal = admission_refusal(self.lifecycle, self.settings.max_pending_requests)
        if refusal is not None:
            reason, error = refusal
            self.metrics.reject(reason)
            raise error
        runtime = self.runtime
        assert runtime is not None  # admission refuses while the model loads
        self.lifecycle.pending += 1
        try:
            yield runtime
        finally:
            self.lifecycle.pending -= 1


@dataclass
class _Stream:
    """A synthesize-start … synthesize-stop stream: its voice, its splitter and the segments ready to speak."""

    voice: Optional[SynthesizeVoice]
    sample_rate: Optional[int]
    splitter: IncrementalSplitter = field(default_factory=IncrementalSplitter)
    segments: asyncio.Queue = field(default_factory=asyncio.Queue)  # (text, time it was ready) or None: the end
    characters: int = 0


class WyomingConnection:
    """One client: a reader that answers or queues each event, and a worker that speaks, one job at a time."""

    def __init__(self, service: WyomingService, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, where: str):
        self.service = service
        self.settings = service.settings
        self.reader = reader
        self.limited = _LimitedReader(reader)
        self.writer = writer
        self.where = where
        self.jobs: asyncio.Queue[Callable[[], Awaitable[None]]] = asyncio.Queue()
        self.stream: Optional[_Stream] = None
        self.working = False

    async def run(self) -> None:
        reading = asyncio.ensure_future(self._read())
        working = asyncio.ensure_future(self._work())
        try:
            await asyncio.wait({reading, working}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # The reader ends at the client's end of the connection or a fatal error; the worker only at a
            # fatal error. Either way the other stops: a generation is cancelled, its backend slot freed.
            for task in (reading, working):
                task.cancel()
            await asyncio.gather(reading, working, return_exceptions=True)

    async def write(self, event: Event) -> None:
        await async_write_event(event, self.writer)

    async def fail(self, error: Exception) -> None:
        """Send the error event (the connection closes after it)."""
        if isinstance(error, FlashTTSError):
            logger.info("Wyoming %s: %s (%s)", self.where, error.message, error.code)
        else:
            logger.warning("Wyoming %s: %s", self.where, error)
        try:
            await self.write(error_event(error))
        except (ConnectionError, RuntimeError):
            pass  # the client is gone already

    # -- reading ---------------------------------------------------------------------------------
    async def _read(self) -> None:
        while True:
            # A client owes us events while its stream is open or while it has nothing running; while it waits
            # for audio it may be silent as long as that takes.
            idle = self.stream is not None or not (self.working or not self.jobs.empty())
            try:
                event = await asyncio.wait_for(
                    async_read_event(cast(asyncio.StreamReader, self.limited)), IDLE_SECONDS if idle else None
                )
            except asyncio.TimeoutError:
                logger.info("Wyoming %s: idle for %g s, closed", self.where, IDLE_SECONDS)
                return
            except EventTooLarge as exc:
                await self.fail(PayloadTooLarge(str(exc)))
                return
            except (asyncio.IncompleteReadError, ConnectionError):
                return  # the client left in the middle of an event
            except Exception as exc:  # a JSON header that is no event: not an object, no type, bad lengths …
                await self.fail(ProtocolError(f"malformed Wyoming event ({type(exc).__name__})"))
                return
            if event is None:
                if not self.reader.at_eof():  # a line that is not JSON
                    await self.fail(ProtocolError("malformed Wyoming event: not a JSON header line"))
                return  # else: the client closed its side
            try:
                await self._dispatch(event)
            except (FlashTTSError, ProtocolError) as exc:
                await self.fail(exc)
                return
            except (KeyError, TypeError, AttributeError, ValueError):
                await self.fail(ProtocolError(f"malformed {str(event.type)[:40]!r} event"))
                return

    async def _dispatch(self, event: Event) -> None:
        kind = event.type
        if not isinstance(event.data, dict):
            raise ProtocolError(f"the data of a {str(kind)[:40]!r} event must be an object")
        if Describe.is_type(kind):
            await self.write((await self.service.info()).event())
        elif Ping.is_type(kind):
            await self.write(Pong(text=Ping.from_event(event).text).event())
        elif Synthesize.is_type(kind):
            if self.stream is not None:
                return  # the whole text again, which Home Assistant sends inside a stream for older servers
            synthesize = Synthesize.from_event(event)
            text = _text(synthesize.text)
            rate = _sample_rate(event.data)
            self._queue(lambda: self._synthesize(text, synthesize.voice, rate))
        elif SynthesizeStart.is_type(kind):
            if self.stream is not None:
                raise ProtocolError("synthesize-start inside a stream: send synthesize-stop first")
            start = SynthesizeStart.from_event(event)
            stream = _Stream(voice=start.voice, sample_rate=_sample_rate(event.data))
            self.stream = stream
            self._queue(lambda: self._synthesize_stream(stream))
        elif SynthesizeChunk.is_type(kind):
            if self.stream is None:
                raise ProtocolError("synthesize-chunk outside a stream: send synthesize-start first")
            self._add_text(_text(SynthesizeChunk.from_event(event).text))
        elif SynthesizeStop.is_type(kind):
            if self.stream is None:
                raise ProtocolError("synthesize-stop outside a stream")
            stream, self.stream = self.stream, None
            self._ready(stream, stream.splitter.flush())
            stream.segments.put_nowait(None)
        # Anything else (audio, transcripts, a newer protocol's events) is not for a TTS server: ignored.

    def _queue(self, job: Callable[[], Awaitable[None]]) -> None:
        if self.jobs.qsize() >= MAX_QUEUED:
            raise ServerOverloaded(f"more than {MAX_QUEUED} requests queued on one connection")
        self.jobs.put_nowait(job)

    def _add_text(self, text: str) -> None:
        stream = self.stream
        assert stream is not None  # text comes between synthesize-start and synthesize-stop
        stream.characters += len(text)
        if stream.characters > self.settings.max_text_length:
            raise PayloadTooLarge(
                f"the streamed text is over {self.settings.max_text_length} characters (see --max_text_length)",
                param="text",
            )
        self._ready(stream, stream.splitter.push(text))

    @staticmethod
    def _ready(stream: _Stream, segments: list[str]) -> None:
        now = time.perf_counter()
        for segment in segments:
            stream.segments.put_nowait((segment, now))

    # -- speaking --------------------------------------------------------------------------------
    async def _work(self) -> None:
        while True:
            job = await self.jobs.get()
            self.working = True
            try:
                await job()
            except FlashTTSError as exc:
                await self.fail(exc)
                return
            except ConnectionError:
                return  # the client left while we wrote to it
            except Exception as exc:
                logger.exception("Wyoming %s: synthesis failed", self.where)
                await self.fail(exc)
                return
            finally:
                self.working = False

    async def _resolve(
        self, runtime: "TTSRuntime", voice: Optional[SynthesizeVoice]
    ) -> tuple[Optional[str], Optional[VoiceReference], str]:
        name = voice.name if voice is not None else None
        if name is not None and not isinstance(name, str):
            raise InvalidRequest("the voice name must be a string", param="voice")
        name = (name or "").strip()
        if voice is not None and voice.speaker and voice.speaker != name:
            logger.debug("Wyoming %s: speaker %r ignored (voices here have one speaker)", self.where, voice.speaker)
        if not name:
            builtin, reference = await self.service.default_voice(runtime)
        else:
            builtin, reference = await runtime.resolve_voice(name)
        return builtin, reference, builtin or (reference.name if reference is not None else None) or name

    async def _synthesize(self, text: str, voice: Optional[SynthesizeVoice], sample_rate: Optional[int]) -> None:
        async with self._accounted() as started:
            check_text_length(text, self.settings)
            async with self.service.admitted() as runtime:
                builtin, reference, label = await self._resolve(runtime, voice)
                audio = _AudioOut(self, runtime, sample_rate)
                await audio.speak(runtime, text, builtin, reference, started)
                await audio.stop()
            self.service.metrics.real_time_factor.labels(ROUTE).observe(
                (time.perf_counter() - started) / max(audio.source_seconds, 1e-3)
            )
            logger.info(
                "Wyoming %s: synthesize, voice %s: %.2f s of audio, first audio after %s",
                self.where,
                label,
                audio.source_seconds,
                audio.first_audio_text,
            )

    async def _synthesize_stream(self, stream: _Stream) -> None:
        async with self._accounted():
            spoken = 0
            async with self.service.admitted() as runtime:
                builtin, reference, label = await self._resolve(runtime, stream.voice)
                audio = _AudioOut(self, runtime, stream.sample_rate)
                while (item := await stream.segments.get()) is not None:
                    segment, ready = item
                    sent = audio.samples
                    try:
                        await audio.speak(runtime, segment, builtin, reference, ready)
                    except InvalidRequest as exc:
                        # A piece of a reply with nothing the engine can say ("…", an emoji): the rest still counts.
                        if exc.param != "text" or audio.samples != sent:
                            raise
                        logger.info("Wyoming %s: segment %r skipped: %s", self.where, segment[:40], exc.message)
                        continue
                    spoken += 1
                if not spoken:
                    raise InvalidRequest("the stream had no text to speak", param="text")
                await audio.stop()
                await self.write(SynthesizeStopped().event())
            logger.info(
                "Wyoming %s: synthesize stream, voice %s: %d segment(s), %.2f s of audio, first audio after %s",
                self.where,
                label,
                spoken,
                audio.source_seconds,
                audio.first_audio_text,
            )

    @asynccontextmanager
    async def _accounted(self) -> AsyncIterator[float]:
        """One synthesis in /metrics (route "wyoming"): counted by status (the HTTP status its error has,
        499 for a client that left) and timed; its log lines carry a request id."""
        started = time.perf_counter()
        status = 200
        token = _request_id.set(uuid.uuid4().hex)
        try:
            yield started
        except FlashTTSError as exc:
            status = exc.status
            raise
        except (asyncio.CancelledError, ConnectionError):
            status = CLIENT_GONE
            logger.info("Wyoming %s: the client left; its synthesis is cancelled", self.where)
            raise
        except Exception:
            status = 500
            raise
        finally:
            metrics = self.service.metrics
            metrics.requests.labels(ROUTE, str(status)).inc()
            metrics.duration.labels(ROUTE).observe(time.perf_counter() - started)
            _request_id.reset(token)


class _AudioOut:
    """The audio of one synthesis or stream: audio-start before its first chunk, chunks of at most
    CHUNK_SECONDS with their timestamps, audio-stop at the end; resampled when a rate was asked for."""

    def __init__(self, connection: WyomingConnection, runtime: "TTSRuntime", sample_rate: Optional[int]):
        self.connection = connection
        self.source_rate = runtime.engine.sample_rate
        self.rate = sample_rate or connection.settings.wyoming_sample_rate or self.source_rate
        self.started = False
        self.samples = 0  # sent, at the output rate
        self.source_seconds = 0.0
        self.first_audio: Optional[float] = None

    @property
    def first_audio_text(self) -> str:
        return f"{self.first_audio:.3f} s" if self.first_audio is not None else "-"

    async def speak(
        self,
        runtime: "TTSRuntime",
        text: str,
        voice: Optional[str],
        reference: Optional[VoiceReference],
        since: float,
    ) -> None:
        source, rate = self.source_rate, self.rate
        # The synthesis's id (every segment of a stream shares it): the engine's log lines name it.
        request_id = _request_id.get() or uuid.uuid4().hex
        request = SynthesisRequest(text=text, voice=voice, reference=reference, stream=True, request_id=request_id)
        chunks: AsyncGenerator[np.ndarray, None] = _measured(runtime.synthesize(request), self, source)
        if rate != source:
            chunks = resampled(chunks, source, rate)
        metrics = self.connection.service.metrics
        try:
            async for chunk in chunks:
                await self._send(chunk)
                if self.first_audio is None:
                    self.first_audio = time.perf_counter() - since
                    metrics.time_to_first_audio.labels(ROUTE).observe(self.first_audio)
        finally:
            await chunks.aclose()

    async def _send(self, chunk: np.ndarray) -> None:
        rate = self.rate
        write = self.connection.write
        if not self.started:
            await write(AudioStart(rate=rate, width=2, channels=1).event())
            self.started = True
        step = max(1, int(rate * CHUNK_SECONDS))
        for i in range(0, chunk.shape[0], step):
            piece = chunk[i : i + step]
            event = AudioChunk(
                rate=rate,
                width=2,
                channels=1,
                audio=float_to_int16(piece).tobytes(),
                timestamp=self.samples * 1000 // rate,
            ).event()
            await write(event)
            self.samples += int(piece.shape[0])

    async def stop(self) -> None:
        if not self.started:  # nothing was made (an engine may give no audio for a text): still a complete answer
            await self.connection.write(AudioStart(rate=self.rate, width=2, channels=1).event())
        await self.connection.write(AudioStop(timestamp=self.samples * 1000 // self.rate).event())


async def _measured(
    chunks: AsyncGenerator[np.ndarray, None], out: _AudioOut, rate: int
) -> AsyncGenerator[np.ndarray, None]:
    """The engine's chunks, counted as seconds of audio at the model's rate (flashtts_audio_seconds_total)."""
    metric = out.connection.service.metrics.audio_seconds.labels(ROUTE)
    try:
        async for chunk in chunks:
            seconds = chunk.shape[0] / rate
            out.source_seconds += seconds
            metric.inc(seconds)
            yield chunk
    finally:
        await chunks.aclose()


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise InvalidRequest("text must be a string", param="text")
    return value


def _sample_rate(data: dict) -> Optional[int]:
    """An optional ``sample_rate`` in the event's data (our extension; other servers ignore it)."""
    value = data.get("sample_rate")
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not MIN_SAMPLE_RATE <= value <= MAX_SAMPLE_RATE:
        raise InvalidRequest(
            f"sample_rate must be an integer between {MIN_SAMPLE_RATE} and {MAX_SAMPLE_RATE} Hz", param="sample_rate"
        )
    return value


def error_event(error: Exception) -> Event:
    if isinstance(error, FlashTTSError):
        return Error(text=error.message, code=error.code).event()
    if isinstance(error, ProtocolError):
        return Error(text=str(error), code="malformed_event").event()
    return Error(text="internal server error", code="internal_error").event()


async def _close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, last: Optional[Event] = None) -> None:
    """End a connection: ``last`` sent, our side shut, and what the client still sends read away for a moment
    (closing a socket with unread bytes in it makes the kernel reset the connection, and the client would
    see "connection reset" instead of the error event)."""
    try:
        if last is not None:
            await async_write_event(last, writer)
        if not reader.at_eof() and writer.can_write_eof() and not writer.is_closing():
            writer.write_eof()
            deadline = time.monotonic() + LINGER_SECONDS
            discarded = 0
            while discarded < LINGER_BYTES and (left := deadline - time.monotonic()) > 0:
                data = await asyncio.wait_for(reader.read(65536), left)
                if not data:
                    break
                discarded += len(data)
    except (ConnectionError, RuntimeError, asyncio.TimeoutError):
        pass
    finally:
        writer.close()


async def start_wyoming(app: "FastAPI", settings: "ServerSettings") -> WyomingService:
    """The listener on ``--wyoming_port``, accepting. A port that cannot be opened raises (the startup fails,
    as it does when the HTTP port is taken)."""
    service = WyomingService(app, settings)
    try:
        await service.start()
    except OSError as exc:
        raise WyomingListenError(
            f"the Wyoming listener cannot listen on {service.host}:{service.port}: {exc.strerror or exc}"
        ) from None
    return service
