"""Routes for saved roles; the logic is in serving.py."""

from __future__ import annotations

import asyncio
from typing import Optional

from fastapi import APIRouter, Depends, File, Form, UploadFile

from ..auth import require_api_key
from ..dependencies import get_runtime, get_settings
from ..errors import ERROR_RESPONSES
from ..runtime import TTSRuntime
from ..settings import ServerSettings
from . import serving
from .protocol import RoleChanged, RoleList

router = APIRouter(tags=["roles"], dependencies=[Depends(require_api_key)], responses=ERROR_RESPONSES)


@router.get("/audio_roles", response_model=RoleList)
async def audio_roles(runtime: TTSRuntime = Depends(get_runtime)) -> RoleList:
    """Every voice name the server accepts: saved roles and the engine's built-in voices."""
    return await asyncio.to_thread(serving.list_roles, runtime)  # the store may be remote (s3://)


@router.post("/add_speaker", response_model=RoleChanged)
async def add_speaker(
    name: str = Form(..., description="Name of the role (letters, digits, '_', '-', '.', spaces; ≤ 64)."),
    audio: Optional[str] = Form(None, description="Reference audio as an http(s) URL or base64."),
    reference_text: Optional[str] = Form(None, max_length=10_000, description="Transcript of the reference audio."),
    audio_file: Optional[UploadFile] = File(None, description="Reference audio upload."),
    latent_file: Optional[UploadFile] = File(None, description="MegaTTS3 latent (.npy)."),
    overwrite: bool = Form(False, description="Replace a role of the same name."),
    runtime: TTSRuntime = Depends(get_runtime),
    settings: ServerSettings = Depends(get_settings),
) -> RoleChanged:
    """Save a voice under ``name``; its tokens are computed once and stored with it."""
    return await serving.add_speaker(runtime, settings, name, audio, reference_text, audio_file, latent_file, overwrite)


@router.post("/delete_speaker", response_model=RoleChanged)
async def delete_speaker(
    name: str = Form(..., description="Name of the role to delete."),
    runtime: TTSRuntime = Depends(get_runtime),
) -> RoleChanged:
    """Delete a saved role (404 when there is none of that name)."""
    return await serving.delete_speaker(runtime, name)
