"""Turning an engine's audio chunks into an HTTP response: any format, streamed or whole, or SSE.

One path for all of them: chunks → (optional resampling) → one encoder per response → bytes. A
streamed response sends each encoded piece as soon as it exists; a whole one drains the same
iterator. Either way a client that goes away cancels the generation.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from dataclasses import dataclass
from typing import AsyncGenerator, AsyncIterator, Awaitable, Optional, TypeVar

import anyio
import numpy as np
from fastapi import Request, Response
from fastapi.responses import StreamingResponse
from flashtts_core.errors import FlashTTSError, InvalidRequest
from flashtts_core.formats import AudioEncoder
from flashtts_core.speaking_rate import BoundReport

from .errors import error_body
from .metrics import observed_audio
from .runtime import TTSRuntime

logger = logging.getLogger("flashtts.server")
T = TypeVar("T")

# Segments of a whole-body response cut at their speaking-rate bound (flashtts_core.speaking_rate).
BOUND_CUT_HEADER = "X-Speaking-Rate-Bound-Cut"
MIN_SAMPLE_RATE = 8000
MAX_SAMPLE_RATE = 48000
# usage.output_tokens counts 20 ms audio frames (Spark-TTS's 50 Hz token rate), the same for every engine.
USAGE_FRAMES_PER_SECOND = 50


@dataclass
class OutputSpec:
    """What a response carries: format, the encoder of this response, the engine's rate and the rate sent out."""

    format: str
    encoder: AudioEncoder
    source_rate: int
    rate: int

    @property
    def media_type(self) -> str:
        return self.encoder.media_type

    @property
    def headers(self) -> dict[str, str]:
        headers = {
            "X-Sample-Rate": str(self.rate),
            "Content-Disposition": f'inline; filename="speech.{self.encoder.extension or self.format}"',
            "Cache-Control": "no-store",
        }
        if self.format == "pcm":
            headers["X-Audio-Format"] = "s16le; channels=1"
        return headers


def output_spec(runtime: TTSRuntime, response_format: str, sample_rate: Optional[int], stream: bool) -> OutputSpec:
    """Validate the requested format and rate and open this response's encoder (400 naming the problem)."""
    name = str(response_format).strip().lower()
    encoder_cls = runtime.plugins.get_format(name)
    source = runtime.engine.sample_rate
    rate = source if sample_rate is None else int(sample_rate)
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise InvalidRequest(
            f"sample_rate must be between {MIN_SAMPLE_RATE} and {MAX_SAMPLE_RATE} Hz", param="sample_rate"
        )
    try:
        # Opened now, before any synthesis: a codec that cannot take this rate (mp3 at 47999 Hz) is a 400.
        encoder = encoder_cls(rate, stream=stream)
    except Exception as exc:
        raise InvalidRequest(
            f"response_format {name!r} cannot encode audio at {rate} Hz ({exc}); choose a standard rate such as "
            "16000, 22050, 24000, 44100 or 48000",
            param="sample_rate" if sample_rate is not None else "response_format",
        ) from None
    return OutputSpec(format=name, encoder=encoder, source_rate=source, rate=rate)


async def _aclose(iterator) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        # Shielded: cleanup must finish even inside a cancelled scope, or the backend slot stays taken.
        with anyio.CancelScope(shield=True):
            await aclose()


async def resampled(chunks: AsyncIterator[np.ndarray], source: int, target: int) -> AsyncGenerator[np.ndarray, None]:
    import soxr

    stream = soxr.ResampleStream(source, target, 1, dtype="float32", quality="HQ")
    try:
        async for chunk in chunks:
            out = await asyncio.to_thread(stream.resample_chunk, np.ascontiguousarray(chunk, dtype=np.float32))
            if out.size:
                yield out
        tail = stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
        if tail.size:
            yield tail
    finally:
        await _aclose(chunks)


async def start_audio(chunks: AsyncIterator[np.ndarray]) -> AsyncIterator[np.ndarray]:
    """Pull the first chunk now, so a refused request (unknown voice, missing capability …) is a
    4xx before any response header leaves; the returned iterator replays it."""
    iterator = chunks.__aiter__()
    try:
        first = await iterator.__anext__()
    except StopAsyncIteration:
        first = None
    except BaseException:
        await _aclose(iterator)
        raise

    async def replay() -> AsyncIterator[np.ndarray]:
        try:
            if first is not None:
                yield first
                async for chunk in iterator:
                    yield chunk
        finally:
            await _aclose(iterator)

    return replay()


class ClosingStreamingResponse(StreamingResponse):
    """A StreamingResponse that always closes its body iterator, also when the client disconnects,
    so the generation behind it stops at once instead of at garbage collection."""

    async def stream_response(self, send) -> None:
        try:
            await super().stream_response(send)
        finally:
            await _aclose(self.body_iterator)


async def _encoded(runtime: TTSRuntime, chunks: AsyncIterator[np.ndarray], spec: OutputSpec) -> AsyncIterator[bytes]:
    if spec.rate != spec.source_rate:
        chunks = resampled(chunks, spec.source_rate, spec.rate)
    async for data in runtime.encode_stream(chunks, spec.encoder):
        yield data


async def _until_disconnected(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def _collect(pieces: AsyncIterator[bytes]) -> bytes:
    try:
        return b"".join([piece async for piece in pieces])
    finally:
        await _aclose(pieces)


class ClientGone(Exception):
    """The client disconnected before its response could start."""


async def until_done_or_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await ``work``, cancelling it if the client disconnects first (then raise ClientGone)."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_until_disconnected(request))
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not task.done():
            task.cancel()
            with anyio.CancelScope(shield=True):
                await asyncio.gather(task, return_exceptions=True)
    if task.cancelled():
        logger.info("client left %s before its audio was ready; generation cancelled", request.url.path)
        raise ClientGone()
    return task.result()


async def audio_response(
    request: Request,
    runtime: TTSRuntime,
    chunks: AsyncIterator[np.ndarray],
    spec: OutputSpec,
    stream: bool,
    report: Optional[BoundReport] = None,
) -> Response:
    """The audio of ``chunks`` in ``spec``'s format: streamed as it is produced, or as one body.

    Until the response starts, the work is watched: a client that leaves cancels the generation. A
    whole body whose segments the speaking-rate bound cut (``report``) says so in ``BOUND_CUT_HEADER``
    (a stream's headers leave before the cut happens: the log line and the metric tell it then).
    """
    media_type = spec.media_type
    chunks = observed_audio(request, chunks, spec.source_rate)
    try:
        if stream:
            chunks = await until_done_or_disconnected(request, start_audio(chunks))
            pieces = _encoded(runtime, chunks, spec)
            return ClosingStreamingResponse(
                _logged_stream(pieces), media_type=media_type, headers={**spec.headers, "X-Accel-Buffering": "no"}
            )
        body = await until_done_or_disconnected(request, _collect(_encoded(runtime, chunks, spec)))
    except ClientGone:
        return Response(status_code=499)  # nobody is listening; uvicorn drops it
    headers = spec.headers
    if report is not None and report.cut_segments:
        headers[BOUND_CUT_HEADER] = str(report.cut_segments)
    return Response(body, media_type=media_type, headers=headers)


async def _logged_stream(pieces: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    # Headers are gone once streaming starts: a failure can only end the stream, so say why in the log.
    try:
        async for piece in pieces:
            yield piece
    except FlashTTSError as exc:
        logger.warning("stream ended early: %s", exc.message)
    except Exception:
        logger.exception("stream ended by an unexpected error")
    finally:
        await _aclose(pieces)


def _sse(event: dict) -> bytes:
    return f"data: {json.dumps(event, separators=(',', ':'))}\n\n".encode()


async def sse_response(
    request: Request, runtime: TTSRuntime, chunks: AsyncIterator[np.ndarray], spec: OutputSpec, input_text: str
) -> Response:
    """OpenAI's ``stream_format=sse``: ``speech.audio.delta`` events with base64 audio, then
    ``speech.audio.done`` with usage (input_tokens: characters of input; output_tokens: 20 ms frames)."""
    chunks = observed_audio(request, chunks, spec.source_rate)
    try:
        chunks = await until_done_or_disconnected(request, start_audio(chunks))
    except ClientGone:
        return Response(status_code=499)
    samples = 0

    async def counted() -> AsyncIterator[np.ndarray]:
        nonlocal samples
        try:
            async for chunk in chunks:
                samples += int(chunk.shape[0])
                yield chunk
        finally:
            await _aclose(chunks)

    pieces = _encoded(runtime, counted(), spec)

    async def events() -> AsyncIterator[bytes]:
        try:
            async for piece in pieces:
                yield _sse({"type": "speech.audio.delta", "audio": base64.b64encode(piece).decode("ascii")})
        except FlashTTSError as exc:
            yield _sse({"type": "error", **error_body(exc.status, exc.message, exc.param, exc.code)})
            return
        except Exception:
            logger.exception("SSE stream ended by an unexpected error")
            yield _sse({"type": "error", **error_body(500, "internal server error", None, "internal_error")})
            return
        finally:
            await _aclose(pieces)
        input_tokens = len(input_text)
        output_tokens = round(samples / spec.source_rate * USAGE_FRAMES_PER_SECOND)
        usage = {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
        }
        yield _sse({"type": "speech.audio.done", "usage": usage})

    headers = {**spec.headers, "X-Accel-Buffering": "no"}
    headers.pop("Content-Disposition")
    return ClosingStreamingResponse(events(), media_type="text/event-stream", headers=headers)
