"""ElevenLabs' multi-context WebSocket shape at ``/v1/text-to-speech/{voice_id}/multi-stream-input``, a thin
adapter over the session core (session.py), so that the stock ``livekit-plugins-elevenlabs``
``TTS(base_url="http://HOST:PORT/v1")`` and Pipecat's ``ElevenLabsTTSService(url="ws://HOST:PORT")`` work
unmodified.

Connecting: ``voice_id`` (the path) is a saved role, a built-in voice or a ``--voice_alias`` name, for
every context of the socket. Query parameters: ``output_format`` (below); ``auto_mode`` (``true``: each
text message is spoken as it comes, as the plugins send whole sentences in that mode; otherwise core's
splitter waits for a sentence or a long clause, at most 3 s); ``model_id``, ``language_code``,
``sync_alignment``, ``inactivity_timeout``, ``enable_logging``, ``enable_ssml_parsing`` and
``apply_text_normalization`` are accepted and ignored. With ``--api_key`` the key comes as ``xi-api-key``
(ElevenLabs'), ``Authorization: Bearer KEY``, ``?xi_api_key=KEY`` or ``?api_key=KEY``; without it the socket
is refused (closed with 1008 before it opens: the client sees HTTP 403). Without ``--api_key`` any key, or
none, is accepted.

``output_format``: ``pcm_RATE`` for 8000, 16000, 22050, 24000, 32000, 44100 and 48000 Hz
(16-bit little-endian mono), ``ulaw_8000``, ``alaw_8000``, and ``mp3_RATE_KBPS`` (one MP3 stream per context,
e.g. LiveKit's default ``mp3_22050_32``; the encoder holds back its last ~0.2 s until more audio or the
context's end). Default ``mp3_44100_128``, as the hosted service. Anything else (``opus_*``) is an error
for each context that opens.

Client messages (JSON; unknown fields such as ``voice_settings``, ``generation_config`` are ignored):

- ``{text, context_id, flush?}``: the first message of a context opens it (``text`` may be ``" "``); text
  pieces are concatenated verbatim; ``flush: true`` speaks what is buffered now.
- ``{text: "", context_id?}`` with no flush: a keep-alive; nothing happens.
- ``{context_id, close_context: true}``: right after a flush with no text of its own (how both plugins end
  a turn: an empty flush, then close_context), the context finishes what was flushed, then ``isFinal``.
  Any other close_context (after text, or alone: a barge-in) stops the context at once: generation
  cancelled, queued text dropped, no more audio; ``isFinal`` follows at once.
- ``{close_socket: true}``: every context stops at once and the socket is closed (1000).

Server messages:

- ``{audio, isFinal: false, contextId, alignment: null, normalizedAlignment: null}``: base64 audio;
- ``{contextId, isFinal: false, alignment, normalizedAlignment}`` after each segment's audio: word timings
  as characters, ``{chars, charStartTimesMs, charDurationsMs}`` (both fields alike). Word spans as
  session.py times them (MegaTTS3 from its phone durations, else estimated); each word's span is
  spread over its characters, words are separated by a space of no duration. Times are in ms from the start of the context's audio (the hosted service counts from each
  message's audio instead), and each alignment ends with a space stamped 0 ms, 0 ms long: a client that
  adds the last character's end to a running clock per message (Pipecat) adds nothing and reads the
  times as sent, as a client that takes them as sent (LiveKit) does;
- ``{contextId, isFinal: true, alignment, normalizedAlignment}``: the context's audio has all been sent
  (the alignment is one space at the end of the audio: it closes the last word for clients that time a
  word's end by the next character);
- ``{contextId, error, message, code}``: ``error`` a short code, ``message`` the explanation, ``code`` as
  HTTP's (400, 404, 413, 429, 503 …); a context's error is followed by its ``isFinal``. A bad message is an
  error for its context (``contextId`` null when it has none); the socket keeps serving the others.

Limits as Cartesia's route (cartesia.py): ``--realtime_max_contexts`` contexts per socket (429),
``--max_text_length`` of unspoken text per context (413, the context ends), ``--realtime_idle_timeout``
without a context running and without a message, ``--realtime_send_timeout`` for a client that stops
reading; closing the socket cancels all of its contexts.
"""

from __future__ import annotations

import asyncio
import base64
import re
from typing import Callable, Optional

import numpy as np
from fastapi import APIRouter, WebSocket
from flashtts_core.errors import FlashTTSError, InvalidRequest, NotFound
from flashtts_core.formats import MP3Encoder

from ..auth import bearer_token, key_refusal
from ..openai.serving import default_voice
from ..route_table import synthesis_route
from .cartesia import DEFAULT_BUFFER_DELAY_MS, ENCODINGS
from .session import ClientGone, Context, WordTimings
from .socket import POLICY_VIOLATION, RealtimeSocket, context_id_refusal, valid_context_id

ROUTE = "/v1/text-to-speech/{voice_id}/multi-stream-input"
DEFAULT_OUTPUT_FORMAT = "mp3_44100_128"
PCM_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)
MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)  # what LAME encodes
MP3_KBPS = range(8, 321)

router = APIRouter(tags=["realtime"])


# -- output formats ------------------------------------------------------------------------------------
class _Encoder:
    """One context's encoder: ``write`` float32 chunks, ``close`` at the context's end."""

    def __init__(self, write: Callable[[np.ndarray], bytes], close: Callable[[], bytes] = lambda: b""):
        self.write = write
        self.close = close


def parse_output_format(value: Optional[str]) -> tuple[int, Callable[[], _Encoder]]:
    """``output_format`` -> (sample rate, a factory of per-context encoders); InvalidRequest when unsupported."""
    name = (value or DEFAULT_OUTPUT_FORMAT).strip().lower()
    pcm = re.fullmatch(r"pcm_(\d+)", name)
    if pcm and int(pcm.group(1)) in PCM_RATES:
        return int(pcm.group(1)), lambda: _Encoder(ENCODINGS["pcm_s16le"])
    if name in ("ulaw_8000", "mulaw_8000"):
        return 8000, lambda: _Encoder(ENCODINGS["pcm_mulaw"])
    if name == "alaw_8000":
        return 8000, lambda: _Encoder(ENCODINGS["pcm_alaw"])
    mp3 = re.fullmatch(r"mp3_(\d+)_(\d+)", name)
    if mp3 and int(mp3.group(1)) in MP3_RATES and int(mp3.group(2)) in MP3_KBPS:
        rate, kbps = int(mp3.group(1)), int(mp3.group(2))
        encoder_class = type("MP3", (MP3Encoder,), {"bit_rate": kbps * 1000})

        def mp3_encoder() -> _Encoder:
            encoder = encoder_class(rate, stream=True)
            return _Encoder(encoder.write, encoder.close)

        return rate, mp3_encoder
    raise InvalidRequest(
        f"output_format {name[:40]!r} is not offered; use pcm_RATE ({', '.join(map(str, PCM_RATES))}), "
        "ulaw_8000, alaw_8000 or mp3_RATE_KBPS (e.g. mp3_22050_32, mp3_44100_128)",
        param="output_format",
    )


def alignment(timings: WordTimings) -> dict:
    """Word timings as ElevenLabs' character alignment (see the module's docstring for the rule)."""
    chars: list[str] = []
    starts: list[int] = []
    durations: list[int] = []
    for word, start, end in zip(timings.words, timings.start, timings.end):
        if chars:
            chars.append(" ")
            starts.append(round(start * 1000))
            durations.append(0)
        step = (end - start) / len(word)
        for i, char in enumerate(word):
            first = round((start + step * i) * 1000)
            chars.append(char)
            starts.append(first)
            durations.append(max(round((start + step * (i + 1)) * 1000) - first, 0))
    # The closing space: 0 ms at 0 ms, so a running clock that adds the last character's end moves by nothing.
    chars.append(" ")
    starts.append(0)
    durations.append(0)
    return {"chars": chars, "charStartTimesMs": starts, "charDurationsMs": durations}


# -- the socket ----------------------------------------------------------------------------------------
def presented_key(websocket: WebSocket) -> Optional[str]:
    """The key a client sent: xi-api-key (ElevenLabs'), Authorization: Bearer, ?xi_api_key= or ?api_key=."""
    headers, query = websocket.headers, websocket.query_params
    return (
        headers.get("xi-api-key")
        or bearer_token(headers.get("authorization"))
        or query.get("xi_api_key")
        or query.get("api_key")
        or None
    )


@router.websocket(ROUTE)
@synthesis_route
async def multi_stream_input(websocket: WebSocket, voice_id: str) -> None:
    """ElevenLabs' multi-context TTS WebSocket (see flashtts_server.realtime.elevenlabs)."""
    refusal = key_refusal(presented_key(websocket), websocket.app.state.settings.api_key)
    if refusal is not None:
        await websocket.close(code=POLICY_VIOLATION, reason=refusal.message)
        return
    await websocket.accept()
    await ElevenLabsSocket(websocket, voice_id).serve()


class ElevenLabsSocket(RealtimeSocket):
    """One client: ElevenLabs' messages over the shared receive loop (socket.py), and the Output."""

    def __init__(self, websocket: WebSocket, voice_id: str):
        super().__init__(websocket, ROUTE)
        self.voice_id = voice_id
        query = websocket.query_params
        self.output_format = query.get("output_format")
        auto_mode = (query.get("auto_mode") or "").strip().lower() in ("true", "1")
        self.buffer_delay = 0.0 if auto_mode else DEFAULT_BUFFER_DELAY_MS / 1000.0
        self.encoders: dict[str, _Encoder] = {}
        self.bare_flush: set[str] = set()  # contexts whose last message was a flush without text

    # -- client messages -----------------------------------------------------------------------------
    async def handle(self, text: str) -> None:
        message = await self.parse(text)
        if message is None:
            return
        if message.get("close_socket"):
            self.closing = True
            return
        context_id = message.get("context_id")
        piece = message.get("text")
        flush, close = bool(message.get("flush")), bool(message.get("close_context"))
        if context_id is None and not piece and not flush and not close:
            return  # a keep-alive for the socket
        if not valid_context_id(context_id):
            await self._send_error(*context_id_refusal(context_id))
            return
        context = self.session.contexts.get(context_id)
        if close:
            await self._close_context(context_id, context)
            return
        try:
            if piece is None:
                piece = ""
            if not isinstance(piece, str):
                raise InvalidRequest("text must be a string", param="text")
            if not piece and not flush:
                return  # a keep-alive for a context (open, ended or not opened yet): nothing to do
            if context is None:
                context = await self._open(context_id)
            self.session.push(context, piece)
            if piece.strip():
                self.bare_flush.discard(context_id)
            if flush:
                self.session.flush(context)
                if not piece.strip():
                    self.bare_flush.add(context_id)
        except FlashTTSError as exc:
            if context is not None and not context.ended and exc.status == 413:
                await self.session.cancel(context_id)  # over its limit: the context is over
            await self.error(context_id, exc)

    async def _close_context(self, context_id: str, context: Optional[Context]) -> None:
        if context is not None and context_id in self.bare_flush:
            self.session.end(context)  # the turn's end: what was flushed is spoken, then isFinal
            return
        # A barge-in: stop at once; isFinal tells the client nothing more comes for it.
        await self.session.cancel(context_id)
        self._forget(context_id)
        try:
            await self.send({"contextId": context_id, "isFinal": True})
        except ClientGone:
            pass

    def _forget(self, context_id: str) -> None:
        self.encoders.pop(context_id, None)
        self.bare_flush.discard(context_id)

    async def _open(self, context_id: str) -> Context:
        session = self.session
        session.admit()
        runtime, settings = session.runtime, session.settings
        rate, encoder = parse_output_format(self.output_format)
        name = self.voice_id.strip()
        if not name:
            voice, reference = await default_voice(runtime, settings)
        else:
            try:
                voice, reference = await runtime.resolve_voice(settings.voice_aliases.get(name.lower(), name))
            except NotFound as exc:
                raise NotFound(exc.message, param="voice_id") from None
        label = voice or (reference.name if reference is not None and reference.name else name or "default")
        context = Context(
            id=context_id,
            voice=voice,
            reference=reference,
            rate=rate,
            source_rate=runtime.engine.sample_rate,
            timestamps=True,
            max_buffer_delay=self.buffer_delay,
            label=label,
        )
        session.open(context)
        self.encoders[context_id] = encoder()
        return context

    # -- server messages (the session core's Output) -------------------------------------------------
    async def _send_audio(self, context: Context, data: bytes) -> None:
        await self.send(
            {
                "audio": base64.b64encode(data).decode("ascii"),
                "isFinal": False,
                "contextId": context.id,
                "alignment": None,
                "normalizedAlignment": None,
            }
        )

    async def audio(self, context: Context, samples: np.ndarray, step_seconds: float) -> None:
        encoder = self.encoders.get(context.id)
        if encoder is None:
            return
        data = await asyncio.to_thread(encoder.write, samples)
        if data:
            await self._send_audio(context, data)

    async def timestamps(self, context: Context, timings: WordTimings) -> None:
        shape = alignment(timings)
        await self.send({"contextId": context.id, "isFinal": False, "alignment": shape, "normalizedAlignment": shape})

    async def flush_done(self, context: Context, flush_id: int) -> None:
        pass  # the hosted service says nothing when a flush's audio is out

    async def done(self, context: Context) -> None:
        encoder = self.encoders.get(context.id)
        self._forget(context.id)
        if encoder is not None:
            tail = await asyncio.to_thread(encoder.close)
            if tail:
                await self._send_audio(context, tail)
        end = context.samples / context.rate * 1000
        closing = {"chars": [" "], "charStartTimesMs": [round(end)], "charDurationsMs": [0]}
        await self.send(
            {"contextId": context.id, "isFinal": True, "alignment": closing, "normalizedAlignment": closing}
        )

    async def error(self, context_id: Optional[str], error: FlashTTSError) -> None:
        context = self.session.contexts.get(context_id) if context_id is not None else None
        # A bad message for a running context leaves it running; the context's own failure (reported from
        # its worker) or a refused context ends it: isFinal follows.
        running = context is not None and context.task is not asyncio.current_task()
        if context_id is not None and not running:
            self._forget(context_id)
        await self._send_error(context_id, error)
        if context_id is not None and not running:
            try:
                await self.send({"contextId": context_id, "isFinal": True})
            except ClientGone:
                pass

    async def _send_error(self, context_id: Optional[str], error: FlashTTSError) -> None:
        try:
            await self.send(
                {"contextId": context_id, "error": error.code, "message": error.message, "code": error.status}
            )
        except ClientGone:
            pass
