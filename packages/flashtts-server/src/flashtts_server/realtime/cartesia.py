"""Cartesia's WebSocket shape at ``GET /tts/websocket``, a thin adapter over the session core
(session.py), so that the stock ``livekit-plugins-cartesia`` ``TTS(base_url=…)`` and Pipecat's
``CartesiaTTSService(url=…)`` work unmodified.

Connecting: ``cartesia_version`` (query) and ``Cartesia-Version`` (header) are accepted and ignored.
With ``--api_key`` the key comes as ``X-API-Key``, ``Authorization: Bearer KEY`` or ``?api_key=KEY``;
without one the socket is refused (closed with 1008 before it opens: the client sees HTTP 403).
Without ``--api_key`` any key, or none, is accepted (every plugin insists on sending some key).

Client messages (JSON text frames; unknown fields are ignored):

- a generation request ``{context_id, transcript, continue, voice: {mode: "id", id}, output_format:
  {container: "raw", encoding, sample_rate}, add_timestamps, max_buffer_delay_ms, flush, model_id,
  language}``. The first message of a context fixes its voice (a saved role or built-in voice, or a
  ``--voice_alias`` name; none: the default voice) and its output format; later ones add transcript,
  concatenated verbatim. ``continue`` false (the default) ends the context's input. ``flush: true``
  speaks what is buffered now and answers ``flush_done`` with ``flush_id`` (1, 2, … per context) once
  its audio has been sent. ``max_buffer_delay_ms`` (0–5000, default 3000): unspoken text waits at most
  this long for its sentence to end; 0 speaks every message as it comes.
- ``{context_id, cancel: true}``: the context stops at once; nothing more is sent for it.

Server messages, each with ``type``, ``context_id``, ``status_code`` and ``done``:

- ``chunk``: ``data`` (base64 audio in the asked encoding: ``pcm_s16le``, ``pcm_f32le``, ``pcm_mulaw``,
  ``pcm_alaw``; any rate from 8000 to 48000 Hz), ``step_time`` (ms since the previous chunk);
- ``timestamps``: ``word_timestamps: {words, start, end}`` in seconds from the start of the context's
  audio, when ``add_timestamps`` is true; MegaTTS3's from its phone durations, Spark's and Orpheus'
  estimated (see session.py); ``timestamps_estimated`` says which;
- ``flush_done``: ``flush_id``, ``flush_done: true``;
- ``done``: ``done: true`` once the context's audio has all been sent;
- ``error``: ``error`` (the message), ``status_code`` (as HTTP's: 400, 404, 413, 429, 503 …),
  ``done: true``. A bad message is an error for its context (``context_id`` null when it has none);
  the socket keeps serving the others.

Limits: ``--realtime_max_contexts`` contexts per socket (then an error, 429); text not yet spoken per
context up to ``--max_text_length`` (then an error, 413, and the context ends); a socket with no context
running and no message for ``--realtime_idle_timeout`` seconds is closed (1000); a client that leaves
its audio unread holds its contexts back (back-pressure: memory stays bounded), and after
``--realtime_send_timeout`` seconds of one send waiting the socket is given up. Closing the socket
cancels all of its contexts.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from typing import Any, Optional

import numpy as np
from fastapi import APIRouter, WebSocket
from flashtts_core.errors import FlashTTSError, InvalidRequest, NotFound, UnsupportedCapability
from flashtts_core.formats import float_to_int16

from ..audio_response import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE
from ..auth import bearer_token, key_refusal
from ..openai.serving import default_voice
from ..route_table import synthesis_route
from .session import ClientGone, Context, WordTimings
from .socket import POLICY_VIOLATION, RealtimeSocket, context_id_refusal, valid_context_id

logger = logging.getLogger("flashtts.realtime")

ROUTE = "/tts/websocket"
DEFAULT_BUFFER_DELAY_MS = 3000
MAX_BUFFER_DELAY_MS = 5000

router = APIRouter(tags=["realtime"])


# -- G.711 ---------------------------------------------------------------------------------------------
def _mulaw(pcm: np.ndarray) -> np.ndarray:
    """int16 -> G.711 mu-law bytes (the ITU-T reference algorithm on 14-bit samples, as audioop.lin2ulaw)."""
    x = pcm.astype(np.int32) >> 2
    mask = np.where(x < 0, 0x7F, 0xFF)
    x = np.minimum(np.abs(x), 8159) + 0x21
    segment = np.searchsorted(np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF]), x)
    value = np.where(segment >= 8, 0x7F, (np.minimum(segment, 7) << 4) | ((x >> (np.minimum(segment, 7) + 1)) & 0x0F))
    return ((value ^ mask) & 0xFF).astype(np.uint8)


def _alaw(pcm: np.ndarray) -> np.ndarray:
    """int16 -> G.711 A-law bytes (the ITU-T reference algorithm, as audioop.lin2alaw)."""
    x = pcm.astype(np.int32) >> 3
    mask = np.where(x >= 0, 0xD5, 0x55)
    x = np.where(x >= 0, x, -x - 1)
    segment = np.searchsorted(np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF]), x)
    low = np.where(segment < 2, (x >> 1) & 0x0F, (x >> np.maximum(segment, 1)) & 0x0F)
    value = np.where(segment >= 8, 0x7F, (np.minimum(segment, 7) << 4) | low)
    return ((value ^ mask) & 0xFF).astype(np.uint8)


ENCODINGS = {
    "pcm_s16le": lambda samples: float_to_int16(samples).astype("<i2").tobytes(),
    "pcm_f32le": lambda samples: np.asarray(samples, dtype="<f4").tobytes(),
    "pcm_mulaw": lambda samples: _mulaw(float_to_int16(samples)).tobytes(),
    "pcm_alaw": lambda samples: _alaw(float_to_int16(samples)).tobytes(),
}


# -- the socket ----------------------------------------------------------------------------------------
def presented_key(websocket: WebSocket) -> Optional[str]:
    """The key a client sent: X-API-Key (Cartesia's), Authorization: Bearer, or ?api_key=."""
    headers = websocket.headers
    return (
        headers.get("x-api-key")
        or bearer_token(headers.get("authorization"))
        or websocket.query_params.get("api_key")
        or None
    )


@router.websocket(ROUTE)
@synthesis_route
async def tts_websocket(websocket: WebSocket) -> None:
    """Cartesia's realtime TTS WebSocket (see flashtts_server.realtime.cartesia)."""
    refusal = key_refusal(presented_key(websocket), websocket.app.state.settings.api_key)
    if refusal is not None:
        await websocket.close(code=POLICY_VIOLATION, reason=refusal.message)
        return
    await websocket.accept()
    await CartesiaSocket(websocket).serve()


class CartesiaSocket(RealtimeSocket):
    """One client: the receive loop (socket.py), Cartesia's messages, and the Output the session core sends
    through."""

    def __init__(self, websocket: WebSocket):
        super().__init__(websocket, ROUTE)
        # context id -> encoding of its chunks
        self.encodings: dict[str, str] = {}

    # -- client messages -----------------------------------------------------------------------------
    async def handle(self, text: str) -> None:
        message = await self.parse(text)
        if message is None:
            return
        context_id = message.get("context_id")
        if not valid_context_id(context_id):
            await self.error(*context_id_refusal(context_id))
            return
        if message.get("cancel"):
            await self.session.cancel(context_id)
            return
        context = self.session.contexts.get(context_id)
        try:
            transcript = message.get("transcript", "")
            if transcript is None:
                transcript = ""
            if not isinstance(transcript, str):
                raise InvalidRequest("transcript must be a string", param="transcript")
            if context is None:
                context = await self._open(context_id, message)
                self.encodings[context_id] = self._encoding(message)
            self.session.push(context, transcript)
            if message.get("flush"):
                self.session.flush(context)
            if not message.get("continue", False):
                self.session.end(context)
        except FlashTTSError as exc:
            if context is not None and not context.ended and exc.status == 413:
                await self.session.cancel(context_id)  # over its limit: the context is over
            await self.error(context_id, exc)

    def _encoding(self, message: dict) -> str:
        fmt = message.get("output_format") or {}
        return str(fmt.get("encoding") or "pcm_s16le")

    async def _open(self, context_id: str, message: dict) -> Context:
        session = self.session
        session.admit()
        runtime = session.runtime
        source = runtime.engine.sample_rate

        fmt = message.get("output_format") or {}
        if not isinstance(fmt, dict):
            raise InvalidRequest("output_format must be an object", param="output_format")
        container = fmt.get("container", "raw") or "raw"
        if container != "raw":
            raise InvalidRequest(
                f"output_format.container {container!r} is not offered on the WebSocket; use 'raw'",
                param="output_format.container",
            )
        encoding = fmt.get("encoding") or "pcm_s16le"
        if encoding not in ENCODINGS:
            raise InvalidRequest(
                f"output_format.encoding {str(encoding)[:40]!r} is not supported; use one of {', '.join(ENCODINGS)}",
                param="output_format.encoding",
            )
        rate = fmt.get("sample_rate", source)
        if rate is None:
            rate = source
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or int(rate) != rate:
            raise InvalidRequest("output_format.sample_rate must be an integer", param="output_format.sample_rate")
        rate = int(rate)
        if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
            raise InvalidRequest(
                f"output_format.sample_rate must be between {MIN_SAMPLE_RATE} and {MAX_SAMPLE_RATE} Hz",
                param="output_format.sample_rate",
            )

        delay_ms = message.get("max_buffer_delay_ms")
        if delay_ms is None:
            delay_ms = DEFAULT_BUFFER_DELAY_MS
        if (
            isinstance(delay_ms, bool)
            or not isinstance(delay_ms, (int, float))
            or not 0 <= delay_ms <= MAX_BUFFER_DELAY_MS
        ):
            raise InvalidRequest(
                f"max_buffer_delay_ms must be a number from 0 to {MAX_BUFFER_DELAY_MS}", param="max_buffer_delay_ms"
            )

        voice, reference, label = await self._voice(message.get("voice"))
        context = Context(
            id=context_id,
            voice=voice,
            reference=reference,
            rate=rate,
            source_rate=source,
            timestamps=bool(message.get("add_timestamps")),
            max_buffer_delay=delay_ms / 1000.0,
            label=label,
        )
        return session.open(context)

    async def _voice(self, value: Any):
        session = self.session
        runtime, settings = session.runtime, session.settings
        if value is None:
            name = ""
        elif isinstance(value, str):
            name = value
        elif isinstance(value, dict):
            mode = value.get("mode", "id")
            if mode != "id":
                raise UnsupportedCapability(
                    f"voice mode {str(mode)[:40]!r} is not offered here; use {{'mode': 'id', 'id': NAME}} with a "
                    "built-in voice or saved role",
                    param="voice.mode",
                )
            name = value.get("id") or ""
            if not isinstance(name, str):
                raise InvalidRequest("voice.id must be a string", param="voice.id")
        else:
            raise InvalidRequest("voice must be an object {'mode': 'id', 'id': NAME}", param="voice")
        name = name.strip()
        if not name:
            voice, reference = await default_voice(runtime, settings)
        else:
            target = settings.voice_aliases.get(name.lower(), name)
            try:
                voice, reference = await runtime.resolve_voice(target)
            except NotFound as exc:
                raise NotFound(exc.message, param="voice.id") from None
        label = voice or (reference.name if reference is not None and reference.name else name or "default")
        return voice, reference, label

    # -- server messages (the session core's Output) -------------------------------------------------
    async def audio(self, context: Context, samples: np.ndarray, step_seconds: float) -> None:
        encode = ENCODINGS[self.encodings.get(context.id, "pcm_s16le")]
        data = await asyncio.to_thread(encode, samples)
        if not data:
            return
        await self.send(
            {
                "type": "chunk",
                "context_id": context.id,
                "status_code": 206,
                "done": False,
                "data": base64.b64encode(data).decode("ascii"),
                "step_time": round(step_seconds * 1000.0, 3),
            }
        )

    async def timestamps(self, context: Context, timings: WordTimings) -> None:
        await self.send(
            {
                "type": "timestamps",
                "context_id": context.id,
                "status_code": 206,
                "done": False,
                "word_timestamps": {
                    "words": timings.words,
                    "start": [round(t, 4) for t in timings.start],
                    "end": [round(t, 4) for t in timings.end],
                },
                "timestamps_estimated": timings.estimated,
            }
        )

    async def flush_done(self, context: Context, flush_id: int) -> None:
        await self.send(
            {
                "type": "flush_done",
                "context_id": context.id,
                "status_code": 206,
                "done": False,
                "flush_done": True,
                "flush_id": flush_id,
            }
        )

    async def done(self, context: Context) -> None:
        self.encodings.pop(context.id, None)
        await self.send({"type": "done", "context_id": context.id, "status_code": 200, "done": True})

    async def error(self, context_id: Optional[str], error: FlashTTSError) -> None:
        if context_id is not None and context_id not in self.session.contexts:
            self.encodings.pop(context_id, None)
        try:
            await self.send(
                {
                    "type": "error",
                    "context_id": context_id,
                    "status_code": error.status,
                    "done": True,
                    "error": error.message,
                    "code": error.code,
                }
            )
        except ClientGone:
            pass
