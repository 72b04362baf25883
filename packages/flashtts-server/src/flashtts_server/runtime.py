"""The loaded model and everything the routes and the CLI share: one synthesis path for both."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import AsyncIterator, Optional

import numpy as np
from flashtts_core.audio_io import load_audio, resample
from flashtts_core.backend import BackendConfig, LLMBackend  # noqa: F401
from flashtts_core.crossfade import silence
from flashtts_core.dialogue import parse_dialogue
from flashtts_core.engine import Engine
from flashtts_core.errors import AudioDecodeError, InvalidRequest, NotFound
from flashtts_core.formats import AudioEncoder
from flashtts_core.options import EngineOptions
from flashtts_core.plugins import PluginManager, get_plugin_manager
from flashtts_core.request import SynthesisRequest, VoiceReference
from flashtts_core.role_store import RoleStore, validate_role_name

logger = logging.getLogger("flashtts.runtime")


class TTSRuntime:
    """An engine with its backend, role store and plugin registry."""

    def __init__(self, engine: Engine, options: EngineOptions, plugins: PluginManager, roles: RoleStore):
        self.engine = engine
        self.options = options
        self.plugins = plugins
        self.roles = roles
        # name -> (the store's version stamp, prepared reference): only a cache, checked on every use.
        self._role_cache: dict[str, tuple[str, VoiceReference]] = {}
        self._role_locks: dict[str, asyncio.Lock] = {}
        # Engine iterators running now; a cancelled or disconnected request leaves this at once.
        self.active_generations = 0

    # -- loading ---------------------------------------------------------------------------------
    @classmethod
    async def load(cls, options: EngineOptions, plugins: Optional[PluginManager] = None) -> "TTSRuntime":
        plugins = plugins or get_plugin_manager()
        if options.model_path is None:
            raise InvalidRequest(
                "--model_path is required (a model directory; `flashtts tiny-model spark DIR` writes a demo one)"
            )
        if not options.backend:
            raise InvalidRequest(f"--backend is required; one of: {', '.join(sorted(plugins.backends))}")
        engine_cls = plugins.detect_engine(options.model_path)
        backend_cls = plugins.get_backend(options.backend)
        backend_cls.check_tensor_parallel(options.llm_tensor_parallel_size)
        logger.info("model %s: engine %s, backend %s", options.model_path, engine_cls.name, backend_cls.name)

        async def create_backend(config: BackendConfig) -> LLMBackend:
            return await backend_cls.create(config)

        start = time.perf_counter()
        engine = await engine_cls.load(options, create_backend)
        engine.model_path = Path(options.model_path)
        engine.backend_name = backend_cls.name
        logger.info(
            "engine %s ready in %.1f s (sample rate %d Hz)",
            engine.name,
            time.perf_counter() - start,
            engine.sample_rate,
        )
        role_dir = options.role_dir or Path(engine.default_role_dir)
        # A local folder or an fsspec URL (s3://bucket/prefix); opening it may list a remote store.
        roles = await asyncio.to_thread(RoleStore, role_dir)
        runtime = cls(engine, options, plugins, roles)
        names = await asyncio.to_thread(roles.names)
        logger.info("roles in %s: %s", role_dir, ", ".join(names) or "none")
        return runtime

    async def close(self) -> None:
        await self.engine.close()

    # -- voices ----------------------------------------------------------------------------------
    def voice_names(self) -> list[str]:
        return sorted(set(self.roles.names()) | set(self.engine.voices))

    def known_voices(self, limit: int = 20) -> str:
        """The voice names for an error message: the first ``limit``, then how many more."""
        names = self.voice_names()
        shown = ", ".join(names[:limit]) or "none"
        return shown + (f" and {len(names) - limit} more (GET /audio_roles)" if len(names) > limit else "")

    async def reference_from_bytes(
        self,
        data: bytes,
        text: Optional[str] = None,
        max_seconds: float = 60.0,
        latent: Optional[np.ndarray] = None,
    ) -> VoiceReference:
        """Decode reference audio (off the loop) and let the engine compute its tokens/latents.

        ``latent`` is what the client sent precomputed (a MegaTTS3 latent)."""
        audio, sr = await asyncio.to_thread(load_audio, data, self.engine.sample_rate, max_seconds=max_seconds)
        ref = VoiceReference(audio=audio, sample_rate=sr, text=(text or "").strip() or None, latent=latent)
        return await self.engine.prepare_reference(ref)

    async def preload_roles(self) -> list[str]:
        """Prepare every role found in role_dir at startup; a broken one is logged and skipped."""
        ready = []
        for name in await asyncio.to_thread(self.roles.names):
            try:
                await self.role_reference(name)
                ready.append(name)
            except Exception as exc:  # one bad folder must not keep the server from starting
                logger.warning("role %r in %s could not be loaded: %s", name, self.roles.root, exc)
        return ready

    async def saved_role_version(self, name: str) -> Optional[str]:
        """The store's version stamp of a saved role; None when there is none of that name (or the name
        cannot be a role). Read from the store each time: another process may have changed it."""
        try:
            name = validate_role_name(name)
        except InvalidRequest:
            return None
        return await asyncio.to_thread(self.roles.version, name)

    async def saved_roles(self) -> list[str]:
        return await asyncio.to_thread(self.roles.names)

    async def role_reference(self, name: str, version: Optional[str] = None) -> VoiceReference:
        """A saved role as a prepared reference; the engine's tokens are computed once and stored.

        The prepared reference is cached in memory, and used only while the store's version stamp is
        the one it was prepared from: an overwrite or delete through another replica is seen at once."""
        name = validate_role_name(name)
        if version is None:
            version = await asyncio.to_thread(self.roles.version, name)
        if version is None:
            self._role_cache.pop(name, None)
            raise NotFound(f"unknown role {name!r}", param="name")
        cached = self._role_cache.get(name)
        if cached is not None and cached[0] == version:
            return cached[1]
        lock = self._role_locks.setdefault(name, asyncio.Lock())
        async with lock:
            cached = self._role_cache.get(name)
            if cached is not None and cached[0] == version:  # prepared while we waited
                return cached[1]
            try:
                stored = await asyncio.to_thread(self.roles.load, name, self.engine.name)
                ref = VoiceReference(
                    audio=stored.audio,
                    sample_rate=stored.sample_rate,
                    text=stored.text,
                    features=stored.features,
                    name=stored.name,
                    latent=stored.latent,
                )
                if not stored.features:
                    if stored.sample_rate != self.engine.sample_rate:
                        ref.audio = await asyncio.to_thread(
                            resample, stored.audio, stored.sample_rate, self.engine.sample_rate
                        )
                        ref.sample_rate = self.engine.sample_rate
                    ref = await self.engine.prepare_reference(ref)
            except AudioDecodeError as exc:
                # Say which role is broken: the client sent a name, not "reference audio".
                raise AudioDecodeError(f"saved role {name!r} cannot be used: {exc.message}", param="name") from None
            if not stored.features and ref.features:
                await asyncio.to_thread(self.roles.save_features, name, self.engine.name, ref.features, stored.version)
            self._role_cache[name] = (stored.version, ref)
            return ref

    async def add_role(self, name: str, reference: VoiceReference, overwrite: bool = True) -> str:
        name = validate_role_name(name)
        if not reference.features:
            reference = await self.engine.prepare_reference(reference)
        name, version = await asyncio.to_thread(
            self.roles.save_versioned,
            name,
            reference.audio,
            reference.sample_rate,
            reference.text,
            reference.features,
            self.engine.name,
            overwrite,
            reference.latent,
        )
        reference.name = name
        self._role_cache[name] = (version, reference)
        return name

    async def delete_role(self, name: str) -> str:
        name = await asyncio.to_thread(self.roles.delete, name)
        self._role_cache.pop(name, None)
        return name

    async def resolve_voice(self, name: Optional[str]) -> tuple[Optional[str], Optional[VoiceReference]]:
        """A name is a saved role first, then a built-in voice; otherwise 404."""
        if name is None:
            return None, None
        version = await self.saved_role_version(name)
        if version is not None:
            return None, await self.role_reference(name, version)
        if name in self.engine.voices:
            return name, None
        known = await asyncio.to_thread(self.known_voices)  # lists the store: off the loop
        raise NotFound(f"unknown voice or role {name[:80]!r}; available: {known}", param="name")

    # -- synthesis -------------------------------------------------------------------------------
    async def synthesize(self, request: SynthesisRequest) -> AsyncIterator[np.ndarray]:
        """The one synthesis path: checks, then the engine's chunks."""
        self.engine.check_request(request)
        self.active_generations += 1
        chunks = self.engine.synthesize(request)
        try:
            async for chunk in chunks:
                if chunk.size:
                    yield chunk
        finally:
            try:
                # Close the engine's iterator now (not at garbage collection), so its backend slot is freed.
                aclose = getattr(chunks, "aclose", None)
                if aclose is not None:
                    await aclose()
            finally:
                self.active_generations -= 1

    async def dialogue(self, base: SynthesisRequest, pause: float = 0.2) -> AsyncIterator[np.ndarray]:
        """Multi-speaker text: each tagged segment in its role's voice, with a pause between speakers."""
        segments = parse_dialogue(base.text)
        resolved = []
        for seg in segments:  # resolve everything first: an unknown role fails before any audio
            try:
                voice, reference = await self.resolve_voice(seg.role)
            except NotFound:
                raise InvalidRequest(f"unknown role {seg.role!r} in <role:{seg.role}>", param="text") from None
            request = replace(
                base,
                text=seg.text,
                voice=voice,
                reference=reference,
                pitch=seg.pitch or base.pitch,
                speed=seg.speed or base.speed,
            )
            self.engine.check_request(request)
            resolved.append(request)
        gap = silence(pause, self.engine.sample_rate)
        for i, request in enumerate(resolved):
            if i and gap.size:
                yield gap
            async for chunk in self.synthesize(request):
                yield chunk

    async def render(self, chunks: AsyncIterator[np.ndarray]) -> np.ndarray:
        parts = [c async for c in chunks]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)

    async def encode_stream(self, chunks: AsyncIterator[np.ndarray], encoder: AudioEncoder) -> AsyncIterator[bytes]:
        """Encode chunks as they come; encoding runs off the event loop."""
        try:
            async for chunk in chunks:
                data = await asyncio.to_thread(encoder.write, chunk)
                if data:
                    yield data
            tail = await asyncio.to_thread(encoder.close)
            if tail:
                yield tail
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()
