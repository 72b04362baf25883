"""The realtime session core: text in pieces per context, audio out as it is decoded, cancel at once.

Protocols (the Cartesia-shaped WebSocket in cartesia.py; ElevenLabs' later) are thin adapters over
:class:`RealtimeSession`. One session serves one socket; it holds up to ``max_contexts`` contexts.

A context (:class:`Context`):

- has one voice and one output rate for its whole life, fixed by its first message;
- takes text with :meth:`RealtimeSession.push` as the client's LLM writes it; core's
  ``IncrementalSplitter`` emits a segment as soon as a sentence or a long enough clause is complete,
  and ``max_buffer_delay`` after the first unspoken text arrived the whole words buffered leave as a
  segment anyway; ``flush`` and the end of input (``continue: false``) send everything buffered;
- speaks its segments in order, one at a time, each through ``TTSRuntime.synthesize`` with
  ``stream=True`` (the engine's own streaming path, as ``/speak`` uses it); chunks are resampled to the
  context's rate (soxr, as the HTTP responses) and handed to the adapter as soon as they are decoded;
- is cancelled with :meth:`RealtimeSession.cancel`: its worker task is cancelled, which closes the
  engine's iterator (the backend slot is freed, ``runtime.active_generations`` drops) and drops the
  queued text; nothing more is sent for it. Closing the session cancels every context.

Admission: a new context is refused (503) while the model loads, while the server shuts down and past
``--max_pending_requests``, exactly as HTTP synthesis is; an admitted context counts in
``lifecycle.pending`` until it ends, so a graceful shutdown waits for it.

Word timings (``timestamps``). Each segment's span is exact for every engine — measured from the
samples sent for it, at the output rate, from the start of the context's audio. Words are the units
of ``text.text_length`` (``text_units``): runs of non-space characters, punctuation attached, and each
CJK character alone. Inside a segment:

- from the engine, when it gives them (``SynthesisRequest.word_timings``; MegaTTS3 does, from its
  phone durations): its words are matched one to one with the segment's words, compared by their
  letters and digits only (NFKC, case-folded: punctuation, full-width forms and case do not matter);
  each word's times are the engine's, offset by the segment's start and kept inside its span, and the
  last word ends where the segment's audio ends. When the words do not match (the engine's text
  normalisation wrote ``3`` as ``three``), the segment falls back to the estimate below (logged at
  debug). ``estimated`` is false only when the engine says its word ↔ sound mapping was exact;
- otherwise **estimated** (Spark, Orpheus): the span is spread over its words in proportion to their
  characters: word *i* gets ``len(word_i) / sum(len(words))`` of the span.
"""

from __future__ import annotations

import asyncio
import logging
import time
import unicodedata
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, AsyncGenerator, Optional, Protocol

import numpy as np
from flashtts_core.errors import FlashTTSError, InvalidRequest, PayloadTooLarge
from flashtts_core.request import SynthesisRequest, VoiceReference, WordTiming
from flashtts_core.text import text_units
from flashtts_core.text_stream import IncrementalSplitter

from ..admission import admission_refusal
from ..audio_response import resampled
from ..request_id import REQUEST_ID as _request_id

if TYPE_CHECKING:
    from ..lifecycle import Lifecycle
    from ..metrics import ServerMetrics
    from ..runtime import TTSRuntime
    from ..settings import ServerSettings

logger = logging.getLogger("flashtts.realtime")

DEFAULT_MAX_CONTEXTS = 16
CLIENT_GONE = 499


@dataclass
class WordTimings:
    """Word timings of one segment, in seconds from the start of the context's audio."""

    words: list[str]
    start: list[float]
    end: list[float]
    estimated: bool = True


def spread_words(text: str, start: float, end: float) -> WordTimings:
    """The documented rule: ``[start, end]`` spread over the words of ``text`` in proportion to their
    characters; the first word starts at ``start``, the last ends at ``end``, no gaps."""
    words = text_units(text)
    if not words:
        return WordTimings([], [], [])
    total = sum(len(w) for w in words)
    span = max(end - start, 0.0)
    starts, ends = [], []
    at = 0
    for word in words:
        starts.append(start + span * at / total)
        at += len(word)
        ends.append(start + span * at / total)
    ends[-1] = end
    return WordTimings(words, starts, ends)


def _word_key(word: str) -> str:
    return "".join(ch for ch in unicodedata.normalize("NFKC", word).casefold() if ch.isalnum())


def engine_words(text: str, start: float, end: float, timings: list[WordTiming]) -> Optional[WordTimings]:
    """The engine's word timings (seconds from the segment's start) as the words of ``text`` in
    ``[start, end]``, or None when its words are not the text's (see the module's docstring)."""
    words = text_units(text)
    if not words or len(words) != len(timings):
        return None
    if any(_word_key(word) != _word_key(timing.word) for word, timing in zip(words, timings)):
        return None
    clamp = lambda t: min(max(start + t, start), end)  # noqa: E731
    starts = [clamp(t.start) for t in timings]
    ends = [max(clamp(t.end), s) for t, s in zip(timings, starts)]
    ends[-1] = end
    return WordTimings(words, starts, ends, estimated=not all(t.exact for t in timings))


class Output(Protocol):
    """What a protocol adapter does with a context's events (each awaited in order, per context)."""

    async def audio(self, context: "Context", samples: np.ndarray, step_seconds: float) -> None:
        """float32 mono samples at ``context.rate``, as decoded."""

    async def timestamps(self, context: "Context", timings: WordTimings) -> None: ...

    async def flush_done(self, context: "Context", flush_id: int) -> None: ...

    async def done(self, context: "Context") -> None: ...

    async def error(self, context_id: Optional[str], error: FlashTTSError) -> None: ...


@dataclass
class _Flush:
    flush_id: int


_END = object()


@dataclass
class Context:
    """One context: its voice, rate, splitter, the segments waiting to be spoken and its worker."""

    id: str
    voice: Optional[str]
    reference: Optional[VoiceReference]
    rate: int
    source_rate: int
    timestamps: bool
    max_buffer_delay: Optional[float]  # seconds; 0: every message is spoken as it comes; None: splitter only
    label: str = ""
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    splitter: IncrementalSplitter = field(default_factory=IncrementalSplitter)
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    queued_chars: int = 0
    ended: bool = False  # no more input (continue: false)
    flushes: int = 0
    samples: int = 0  # sent, at self.rate
    task: Optional[asyncio.Task] = None
    timer: Optional[asyncio.TimerHandle] = None
    created: float = field(default_factory=time.perf_counter)
    ready_at: Optional[float] = None  # when the first segment became ready
    first_audio: Optional[float] = None  # seconds from the first ready segment to the first audio
    status: int = CLIENT_GONE  # as HTTP's, for /metrics: 200 done, 499 cancelled or gone, else its error's

    @property
    def buffered_chars(self) -> int:
        return len(self.splitter.buffered) + self.queued_chars


class RealtimeSession:
    """The contexts of one socket. Methods are called from the socket's receive loop."""

    def __init__(self, state, output: Output, route: str, max_contexts: int = DEFAULT_MAX_CONTEXTS):
        """``state``: the app's state (``runtime``, ``settings``, ``lifecycle``, ``metrics``); the runtime is
        read at each use, as it is None while the model loads."""
        self.state = state
        self.output = output
        self.route = route
        self.max_contexts = max_contexts
        self.contexts: dict[str, Context] = {}

    @property
    def runtime(self) -> "TTSRuntime":
        return self.state.runtime

    @property
    def settings(self) -> "ServerSettings":
        return self.state.settings

    @property
    def lifecycle(self) -> "Lifecycle":
        return self.state.lifecycle

    @property
    def metrics(self) -> "ServerMetrics":
        return self.state.metrics

    # -- lifecycle of a context -----------------------------------------------------------------------
    def admit(self) -> None:
        """Raise the refusal for a new context now (loading, shutting down, overloaded, too many here)."""
        if len(self.contexts) >= self.max_contexts:
            self.metrics.reject("overloaded")
            raise TooManyContexts(
                f"this socket has {len(self.contexts)} contexts running; the limit is {self.max_contexts}: "
                "wait for one to finish or cancel one"
            )
        refusal = admission_refusal(self.lifecycle, self.settings.max_pending_requests)
        if refusal is not None:
            reason, error = refusal
            self.metrics.reject(reason)
            raise error

    def open(self, context: Context) -> Context:
        """Start ``context`` (after :meth:`admit` and the adapter resolved its voice and format)."""
        self.admit()  # again: resolving the voice awaited, the state may have changed
        self.lifecycle.pending += 1
        self.contexts[context.id] = context
        context.task = asyncio.ensure_future(self._run(context))
        # Released by the task's end, however it ends (also when it is cancelled before it ever ran).
        context.task.add_done_callback(lambda task: self._release(context))
        return context

    def _release(self, context: Context) -> None:
        if context.timer is not None:
            context.timer.cancel()
            context.timer = None
        if self.contexts.get(context.id) is context:
            del self.contexts[context.id]
        self.lifecycle.pending -= 1
        self.metrics.requests.labels(self.route, str(context.status)).inc()
        self.metrics.duration.labels(self.route).observe(time.perf_counter() - context.created)

    def push(self, context: Context, text: str) -> None:
        """Text for ``context``; segments it completes are queued at once."""
        if context.ended:
            raise InvalidRequest(f"context {context.id!r} has ended its input (continue: false)", param="context_id")
        if context.buffered_chars + len(text) > self.settings.max_text_length:
            raise PayloadTooLarge(
                f"context {context.id!r} would hold more than {self.settings.max_text_length} characters of text "
                "not yet spoken (see --max_text_length)",
                param="transcript",
            )
        if not text:
            return
        if context.max_buffer_delay == 0:
            segments = context.splitter.push(text) + context.splitter.flush()
        else:
            segments = context.splitter.push(text)
        self._queue(context, segments)
        self._arm_timer(context)

    def flush(self, context: Context) -> int:
        """Everything buffered is spoken now; returns the flush id that ``flush_done`` reports."""
        self._queue(context, context.splitter.flush())
        context.flushes += 1
        context.queue.put_nowait(_Flush(context.flushes))
        self._arm_timer(context)
        return context.flushes

    def end(self, context: Context) -> None:
        """The end of the context's input: what is buffered is spoken, then ``done``."""
        if context.ended:
            return
        self._queue(context, context.splitter.flush())
        context.ended = True
        context.queue.put_nowait(_END)
        self._arm_timer(context)

    async def cancel(self, context_id: str) -> bool:
        """Stop ``context_id`` at once: generation cancelled, queued text dropped, nothing more sent."""
        context = self.contexts.pop(context_id, None)
        if context is None:
            return False
        await self._stop(context)
        logger.info("realtime %s: context %s cancelled", self.route, context_id)
        return True

    async def close(self) -> None:
        """The socket is gone: every context is cancelled."""
        contexts = list(self.contexts.values())
        self.contexts.clear()
        for context in contexts:
            await self._stop(context)

    @property
    def idle(self) -> bool:
        return not self.contexts

    # -- internals -----------------------------------------------------------------------------------
    def _queue(self, context: Context, segments: list[str]) -> None:
        for segment in segments:
            if context.ready_at is None:
                context.ready_at = time.perf_counter()
            context.queued_chars += len(segment)
            context.queue.put_nowait(segment)

    def _arm_timer(self, context: Context) -> None:
        """The buffer delay: unspoken text waits at most ``max_buffer_delay`` for its sentence to end."""
        delay = context.max_buffer_delay
        if not delay or context.ended:
            return
        if not context.splitter.buffered.strip():
            if context.timer is not None:
                context.timer.cancel()
                context.timer = None
            return
        if context.timer is None:
            context.timer = asyncio.get_running_loop().call_later(delay, self._delay_passed, context)

    def _delay_passed(self, context: Context) -> None:
        context.timer = None
        if context.ended or self.contexts.get(context.id) is not context:
            return
        text = context.splitter.buffered
        # Whole words only: the last one may still be being written (no whitespace after it yet).
        cut = max(text.rfind(" "), text.rfind("\n"))
        if cut <= 0 or not text[:cut].strip():
            self._arm_timer(context)  # one unfinished word: wait another delay for it
            return
        head, tail = text[:cut], text[cut:]
        context.splitter = IncrementalSplitter(
            context.splitter.clause_threshold, context.splitter.max_length, context.splitter.length
        )
        segments = context.splitter.push(head) + context.splitter.flush()
        context.splitter.push(tail)
        self._queue(context, segments)
        self._arm_timer(context)

    async def _stop(self, context: Context) -> None:
        if context.timer is not None:
            context.timer.cancel()
            context.timer = None
        task = context.task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self, context: Context) -> None:
        """The context's worker: its segments in order, then ``done`` (or an error, or a cancel)."""
        token = _request_id.set(context.request_id)
        status = 200
        context.status = CLIENT_GONE  # until it ends otherwise
        try:
            while True:
                item = await context.queue.get()
                if item is _END:
                    break
                if isinstance(item, _Flush):
                    await self.output.flush_done(context, item.flush_id)
                    continue
                context.queued_chars -= len(item)
                await self._speak(context, item)
            await self.output.done(context)
            self._observe(context)
        except asyncio.CancelledError:
            status = CLIENT_GONE
            raise
        except FlashTTSError as exc:
            status = exc.status
            logger.info("realtime %s: context %s failed: %s", self.route, context.id, exc.message)
            await self._report(context, exc)
        except Exception:
            status = 500
            logger.exception("realtime %s: context %s failed", self.route, context.id)
            await self._report(context, _Internal("internal server error"))
        finally:
            context.status = status
            _request_id.reset(token)

    async def _report(self, context: Context, error: FlashTTSError) -> None:
        try:
            await self.output.error(context.id, error)
        except Exception:  # the socket is gone: nobody to tell
            pass

    def _observe(self, context: Context) -> None:
        seconds = context.samples / context.rate
        logger.info(
            "realtime %s: context %s, voice %s: %.2f s of audio, first audio %s after its first segment was ready",
            self.route,
            context.id,
            context.label,
            seconds,
            f"{context.first_audio:.3f} s" if context.first_audio is not None else "-",
        )
        if seconds > 0 and context.ready_at is not None:
            self.metrics.real_time_factor.labels(self.route).observe((time.perf_counter() - context.ready_at) / seconds)

    async def _speak(self, context: Context, text: str) -> None:
        request = SynthesisRequest(
            text=text,
            voice=context.voice,
            reference=context.reference,
            stream=True,
            request_id=context.request_id,
            word_timings=[] if context.timestamps else None,
        )
        start = context.samples
        ready = time.perf_counter()
        chunks: AsyncGenerator[np.ndarray, None] = self._measured(self.runtime.synthesize(request), context)
        if context.rate != context.source_rate:
            chunks = resampled(chunks, context.source_rate, context.rate)
        last = ready
        try:
            async for chunk in chunks:
                now = time.perf_counter()
                if context.first_audio is None:
                    context.first_audio = now - (context.ready_at or ready)
                    self.metrics.time_to_first_audio.labels(self.route).observe(context.first_audio)
                await self.output.audio(context, chunk, now - last)
                context.samples += int(chunk.shape[0])
                last = time.perf_counter()
        except InvalidRequest as exc:
            # A piece of a reply with nothing the engine can say ("…", an emoji): the rest still counts.
            if exc.param != "text" or context.samples != start:
                raise
            logger.info("realtime %s: segment %r skipped: %s", self.route, text[:40], exc.message)
            return
        finally:
            await chunks.aclose()
        if context.timestamps and context.samples > start:
            span = (start / context.rate, context.samples / context.rate)
            timings = engine_words(text, *span, request.word_timings) if request.word_timings else None
            if timings is None:
                if request.word_timings:
                    logger.debug(
                        "realtime %s: the engine's words %r are not the segment's %r; its timings are estimated",
                        self.route, [t.word for t in request.word_timings][:20], text[:80],
                    )  # fmt: skip
                timings = spread_words(text, *span)
            if timings.words:
                await self.output.timestamps(context, timings)

    async def _measured(
        self, chunks: AsyncGenerator[np.ndarray, None], context: Context
    ) -> AsyncGenerator[np.ndarray, None]:
        metric = self.metrics.audio_seconds.labels(self.route)
        try:
            async for chunk in chunks:
                metric.inc(chunk.shape[0] / context.source_rate)
                yield chunk
        finally:
            await chunks.aclose()


class TooManyContexts(FlashTTSError):
    """More contexts on one socket than the session allows (429)."""

    status = 429
    code = "too_many_contexts"


class ClientGone(FlashTTSError):
    """The socket closed while a context was sending (nobody to tell)."""

    status = CLIENT_GONE
    code = "client_gone"


class _Internal(FlashTTSError):
    status = 500
    code = "internal_error"
