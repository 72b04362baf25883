"""The logic of the role routes: validate first, then write atomically through the role store."""

from __future__ import annotations

from typing import Optional

from fastapi import UploadFile
from flashtts_core.errors import Conflict, InvalidRequest, NotFound
from flashtts_core.role_store import validate_role_name

from ..reference_audio import reference_from_parts, require_clone
from ..runtime import TTSRuntime
from ..settings import ServerSettings
from .protocol import RoleChanged, RoleList


def list_roles(runtime: TTSRuntime) -> RoleList:
    return RoleList(roles=runtime.voice_names(), saved=runtime.roles.names(), builtin=list(runtime.engine.voices))


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
    reference = await reference_from_parts(
        runtime,
        settings,
        upload=audio_file,
        text=audio,
        reference_text=reference_text,
        latent_file=latent_file,
        upload_param="audio_file",
        text_param="audio",
    )
    saved = await runtime.add_role(name, reference, overwrite=overwrite)
    return RoleChanged(role=saved)


async def delete_speaker(runtime: TTSRuntime, name: str) -> RoleChanged:
    name = validate_role_name(name)
    if await runtime.saved_role_version(name) is None:
        if name in runtime.engine.voices:
            raise InvalidRequest(f"{name!r} is a built-in voice of the engine, not a saved role", param="name")
        raise NotFound(f"unknown role {name!r}", param="name")
    return RoleChanged(role=await runtime.delete_role(name))
