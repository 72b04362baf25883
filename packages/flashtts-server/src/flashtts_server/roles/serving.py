"""The logic of the role routes: validate first, then write atomically through the role store."""

from __future__ import annotations

from typing import Optional

from fastapi import UploadFile
from flashtts_core.errors import Conflict, InvalidRequest, NotFound
from flashtts_core.role_store import validate_role_name

from ..limits import read_upload
from ..reference_audio import audio_from_string, build_reference, max_upload_bytes, require_clone
from ..runtime import TTSRuntime
from ..settings import ServerSettings
from .protocol import RoleChanged, RoleList


def list_roles(runtime: TTSRuntime) -> RoleList:
    return RoleList(roles=runtime.voice_names(), saved=runtime.roles.names(), builtin=list(runtime.engine.voices))


def _present(upload: Optional[UploadFile]) -> bool:
    return upload is not None and bool(upload.filename or upload.size)


async def add_speaker(
    runtime: TTSRuntime,
    settings: ServerSettings,
    name: str,
    audio: Optional[str],
    reference_text: Optional[str],
    audio_file: Optional[UploadFile],
    latent_file: Optional[UploadFile],
    overwrite: bool,
) -> RoleChanged:
    # Every check happens before anything is written: a refused request leaves role_dir untouched.
    name = validate_role_name(name)
    require_clone(runtime, "audio")
    if not overwrite and await runtime.saved_role_version(name) is not None:
        raise Conflict(f"role {name!r} exists already; delete it first or send overwrite=true", param="name")
    limit = max_upload_bytes(settings)
    if _present(audio_file):
        data = await read_upload(audio_file, limit, "audio_file")
    elif audio and audio.strip():
        data = await audio_from_string(audio, settings, "audio")
    else:
        raise InvalidRequest("give the role's audio as audio_file (upload) or audio (URL or base64)", param="audio")
    latent = await read_upload(latent_file, limit, "latent_file") if _present(latent_file) else None
    reference = await build_reference(runtime, settings, data, reference_text, latent, param="audio")
    saved = await runtime.add_role(name, reference, overwrite=overwrite)
    return RoleChanged(role=saved)


async def delete_speaker(runtime: TTSRuntime, name: str) -> RoleChanged:
    name = validate_role_name(name)
    if await runtime.saved_role_version(name) is None:
        if name in runtime.engine.voices:
            raise InvalidRequest(f"{name!r} is a built-in voice of the engine, not a saved role", param="name")
        raise NotFound(f"unknown role {name!r}", param="name")
    return RoleChanged(role=await runtime.delete_role(name))
