"""Reference audio from any of the ways a client can send it: an upload, a URL or base64 text, with
an optional MegaTTS3 latent beside it (/clone_voice and /add_speaker share :func:`reference_from_parts`)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import re
from typing import Optional, TypeGuard

import numpy as np
from fastapi import UploadFile
from flashtts_core.errors import AudioDecodeError, InvalidRequest, PayloadTooLarge, UnsupportedCapability
from flashtts_core.request import VoiceReference

from .limits import MIB, read_upload
from .runtime import TTSRuntime
from .settings import ServerSettings
from .url_fetch import fetch_url, looks_like_url

_DATA_URI = re.compile(r"^data:[\w/+.\-]*(;[\w=\-]+)*;base64,", re.IGNORECASE)
_BASE64_CHARS = re.compile(r"^[A-Za-z0-9+/=_\-\s]+$")
# Shorter than this is a name, not audio: 100 base64 characters are 75 bytes, less than any header.
MIN_BASE64_LENGTH = 100


def max_upload_bytes(settings: ServerSettings) -> int:
    return int(settings.max_upload_mb * MIB)


def looks_like_base64_audio(value: str) -> bool:
    value = value.strip()
    if _DATA_URI.match(value):
        return True
    return len(value) >= MIN_BASE64_LENGTH and bool(_BASE64_CHARS.match(value))


def decode_base64_audio(value: str, max_bytes: int, param: str) -> bytes:
    """Base64 (plain, URL-safe or a ``data:`` URI) to bytes; 400 if it is not base64, 413 if too large."""
    text = _DATA_URI.sub("", value.strip(), count=1)
    text = re.sub(r"\s+", "", text)
    if len(text) * 3 // 4 > max_bytes:
        raise PayloadTooLarge(f"{param} is larger than the limit of {max_bytes / MIB:g} MiB", param=param)
    text = text.replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"{param} is neither an http(s) URL nor valid base64 audio", param=param) from None


async def audio_from_string(value: str, settings: ServerSettings, param: str) -> bytes:
    """The bytes behind a URL or base64 string."""
    if looks_like_url(value):
        try:
            return await fetch_url(
                value,
                timeout=settings.url_timeout,
                max_bytes=max_upload_bytes(settings),
                allow_private=settings.allow_private_urls,
            )
        except InvalidRequest as exc:
            exc.param = param
            raise
    # Off the event loop: decoding megabytes of base64 would stall every other request.
    return await asyncio.to_thread(decode_base64_audio, value, max_upload_bytes(settings), param)


def load_latent(data: bytes, param: str = "latent_file") -> np.ndarray:
    """A MegaTTS3 latent from ``.npy`` bytes: numeric, finite, no pickles."""
    try:
        latent = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception:
        raise InvalidRequest(f"{param} is not a .npy array file", param=param) from None
    if not isinstance(latent, np.ndarray) or latent.size == 0:
        raise InvalidRequest(f"{param} must hold a non-empty array", param=param)
    if latent.dtype.kind != "f":
        # Integers would be read as values silently: a latent is floating point (float32 upstream).
        raise InvalidRequest(f"{param} must hold floating-point values (float32), got {latent.dtype}", param=param)
    latent = latent.astype(np.float32)
    if not np.all(np.isfinite(latent)):
        raise InvalidRequest(f"{param} contains NaN or infinite values", param=param)
    return latent


def require_clone(runtime: TTSRuntime, param: str = "reference_audio") -> None:
    if not runtime.engine.capabilities.clone:
        raise UnsupportedCapability(f"engine {runtime.engine.name!r} does not support voice cloning", param=param)


async def build_reference(
    runtime: TTSRuntime,
    settings: ServerSettings,
    audio: Optional[bytes],
    text: Optional[str] = None,
    latent: Optional[bytes] = None,
    param: str = "reference_audio",
) -> VoiceReference:
    """A prepared clone reference (the engine's tokens/latents computed) from audio bytes."""
    require_clone(runtime, param)
    if not audio:
        raise AudioDecodeError("reference audio is required (upload a file, or give a URL or base64)", param=param)
    latent_array: Optional[np.ndarray] = None
    if latent is not None:
        if not runtime.engine.capabilities.latent:
            raise UnsupportedCapability(
                f"engine {runtime.engine.name!r} does not take a latent file", param="latent_file"
            )
        latent_array = load_latent(latent)
    try:
        return await runtime.reference_from_bytes(
            audio, text, max_seconds=settings.max_reference_seconds, latent=latent_array
        )
    except AudioDecodeError as exc:
        exc.param = exc.param or param
        raise


def upload_present(upload: Optional[UploadFile]) -> TypeGuard[UploadFile]:
    """A file part with content. Browsers send an empty part with filename "" for an untouched file input."""
    return upload is not None and bool(upload.filename or upload.size)


async def reference_from_parts(
    runtime: TTSRuntime,
    settings: ServerSettings,
    *,
    upload: Optional[UploadFile],
    text: Optional[str],
    reference_text: Optional[str],
    latent_file: Optional[UploadFile],
    upload_param: str,
    text_param: str,
) -> VoiceReference:
    """A prepared clone reference from a form's parts: the audio as an upload (``upload_param``) or as
    an http(s) URL / base64 string (``text_param``; the upload wins), its transcript, and a latent
    upload. Every refusal is a 4xx naming the part."""
    limit = max_upload_bytes(settings)
    if upload_present(upload):
        audio = await read_upload(upload, limit, upload_param)
    elif text and text.strip():
        audio = await audio_from_string(text, settings, text_param)
    else:
        raise InvalidRequest(
            f"give the reference voice as {upload_param} (upload) or {text_param} (URL or base64)", param=text_param
        )
    latent = await read_upload(latent_file, limit, "latent_file") if upload_present(latent_file) else None
    return await build_reference(runtime, settings, audio, reference_text, latent, param=text_param)
