"""Spark's chunked streaming: a segment's semantic tokens decoded into growing, crossfaded chunks as
the LLM produces them, and the next segment generated while the current one is still being sent.

Chunk sizes are in semantic tokens, 50 per second of audio: the first chunk is 0.2 s (first audio after
30 tokens: on a CPU that decodes ~20-30 tokens/s, 1-2 s sooner than a 1 s chunk), each next one twice
as long up to 8 s. BiCodec's decoder is convolutional (tens of tokens of receptive field each side),
so a chunk decoded alone differs from the whole decode near its edges (at full size, up to the
signal's own peak within 0.2 s of a cut). Each chunk is therefore decoded with 1 s of the tokens
before it and 0.4 s of the tokens after it (the lookahead: a chunk goes out once those exist, or
the segment has ended) — measured on a full-size BiCodec, that matches the whole decode to ~1e-6
of peak (0.2 s of lookahead: 2e-2) — and its first 0.1 s overlaps the previous chunk's last 0.1 s;
the two are crossfaded, so joins neither click nor drift.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import numpy as np
from flashtts_core.crossfade import StreamJoiner
from flashtts_core.sampling import SamplingParams

FIRST_CHUNK_TOKENS = 10
MAX_CHUNK_TOKENS = 400
LEFT_CONTEXT_TOKENS = 50
LOOKAHEAD_TOKENS = 20
OVERLAP_TOKENS = 5

# semantic codes → their audio (BiCodec's decode with the request's global tokens)
Decode = Callable[[Sequence[int]], Awaitable[np.ndarray]]
# generated token ids → the semantic codes among them
SemanticCodes = Callable[[Sequence[int]], list[int]]


class TokenPump:
    """Runs one backend stream in its own task and buffers its token deltas, so a segment can
    generate ahead of the consumer. ``on_done`` runs once the generation has ended (not on cancel)."""

    _END = object()

    def __init__(self, backend, prompt: list[int], params: SamplingParams, on_done=None):
        self._queue: asyncio.Queue = asyncio.Queue()
        self._on_done = on_done
        self._task = asyncio.ensure_future(self._run(backend, prompt, params))

    async def _run(self, backend, prompt: list[int], params: SamplingParams) -> None:
        stream = backend.stream(prompt, params)
        try:
            async for delta in stream:
                self._queue.put_nowait(delta)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # handed to the consumer
            self._queue.put_nowait(exc)
        else:
            if self._on_done is not None:
                self._on_done()
        finally:
            await stream.aclose()
            self._queue.put_nowait(self._END)

    async def __aiter__(self) -> AsyncIterator[list[int]]:
        while True:
            item = await self._queue.get()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


async def stream_segments(
    backend,
    prompts: Sequence[list[int]],
    params: Sequence[SamplingParams],
    semantic_codes: SemanticCodes,
    decode: Decode,
    hop_length: int,
) -> AsyncIterator[np.ndarray]:
    """Every segment's chunks in order. Segment i+1 starts generating as soon as segment i's tokens
    are all out, while segment i's last chunks are still being decoded and sent: no gap waits on the LLM."""
    pumps: list[TokenPump] = []

    def start(i: int) -> None:
        if i < len(prompts):
            pumps.append(TokenPump(backend, prompts[i], params[i], on_done=lambda: start(i + 1)))

    start(0)
    try:
        for i in range(len(prompts)):
            async for chunk in stream_segment(pumps[i], semantic_codes, decode, hop_length):
                yield chunk
    finally:
        for pump in pumps:
            await pump.close()


async def stream_segment(
    tokens: TokenPump, semantic_codes: SemanticCodes, decode: Decode, hop_length: int
) -> AsyncIterator[np.ndarray]:
    """One segment as growing chunks; their concatenation is exactly as long as the whole decode."""
    joiner = StreamJoiner(OVERLAP_TOKENS * hop_length)
    codes: list[int] = []
    emitted = 0  # tokens whose audio has gone to the joiner
    chunk = FIRST_CHUNK_TOKENS
    async for delta in tokens:
        codes.extend(semantic_codes(delta))
        while len(codes) - emitted >= chunk + LOOKAHEAD_TOKENS:
            yield joiner.push(await decode_window(decode, codes, emitted, emitted + chunk, hop_length))
            emitted += chunk
            chunk = min(chunk * 2, MAX_CHUNK_TOKENS)
    if len(codes) > emitted:
        yield joiner.push(await decode_window(decode, codes, emitted, len(codes), hop_length))
    tail = joiner.flush()
    if tail.size:
        yield tail


async def decode_window(decode: Decode, codes: list[int], start: int, end: int, hop_length: int) -> np.ndarray:
    """Audio of tokens [start - overlap, end) (from 0 for the first chunk), decoded with the
    context that exists on both sides."""
    head = max(0, start - OVERLAP_TOKENS)
    context_start = max(0, head - LEFT_CONTEXT_TOKENS)
    context_end = min(len(codes), end + LOOKAHEAD_TOKENS)
    audio = await decode(codes[context_start:context_end])
    return audio[(head - context_start) * hop_length : (end - context_start) * hop_length]
