"""Prepared clone references kept in memory, keyed by a hash of exactly what the client sent.

Clients of a cloning API usually send the same reference clip with every request (OpenAI-style
clients have no saved-voice step). Preparing it is the engine's most expensive step after the LLM
(Spark: decoding the upload, wav2vec2 and the BiCodec encoder, 0.5-2 s on a CPU), and it is
deterministic, so a repeated upload reuses the first one's result. The key covers the upload's
bytes, its transcript, the duration limit and any latent sent with it: a different byte anywhere
is a different entry. Failures are never kept; identical uploads arriving together prepare once.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from dataclasses import replace
from typing import Awaitable, Callable, Optional

import numpy as np
from flashtts_core.request import VoiceReference


def reference_key(data: bytes, text: Optional[str], max_seconds: float, latent: Optional[np.ndarray]) -> str:
    digest = hashlib.sha256()
    for part in (data, (text or "").encode(), repr(float(max_seconds)).encode()):
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    if latent is not None:
        array = np.ascontiguousarray(latent)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _copy(ref: VoiceReference) -> VoiceReference:
    """A caller may set fields (a role's name) on what it gets: each gets its own object. The arrays
    are shared and never written to."""
    return replace(ref, features=dict(ref.features))


class ReferenceCache:
    """A bounded LRU of prepared references (``size`` entries; 0 keeps nothing)."""

    def __init__(self, size: int):
        self.size = max(0, int(size))
        self._entries: OrderedDict[str, VoiceReference] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str, prepare: Callable[[], Awaitable[VoiceReference]]) -> VoiceReference:
        if self.size == 0:
            self.misses += 1
            return await prepare()
        cached = self._take(key)
        if cached is not None:
            return cached
        lock = self._locks.setdefault(key, asyncio.Lock())
        try:
            async with lock:
                cached = self._take(key)  # prepared by the request we waited for
                if cached is not None:
                    return cached
                self.misses += 1
                ref = await prepare()
                self._entries[key] = ref
                while len(self._entries) > self.size:
                    self._entries.popitem(last=False)
                return _copy(ref)
        finally:
            if not lock.locked() and self._locks.get(key) is lock:
                del self._locks[key]

    def _take(self, key: str) -> Optional[VoiceReference]:
        ref = self._entries.get(key)
        if ref is None:
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return _copy(ref)

    def clear(self) -> None:
        self._entries.clear()
