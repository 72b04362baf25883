"""Routes of the native API; the logic is in serving.py.

The request bodies carry the installed plugins' request fields (plugin_options.py), so the router is
built per app by :func:`build_router`. No ``from __future__ import annotations`` here: FastAPI reads
the endpoints' annotations, which name the assembled models of the enclosing call.
"""

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request, Response

from ..auth import require_api_key
from ..dependencies import get_runtime, get_settings
from ..errors import ERROR_RESPONSES
from ..plugin_options import CLONE_FILES, RequestModels
from ..route_table import synthesis_route
from ..runtime import TTSRuntime
from ..settings import ServerSettings
from . import serving
from .protocol import ServerInfo

AUDIO_RESPONSES = {
    200: {
        "description": "Audio in the requested format; the X-Sample-Rate header gives its sample rate.",
        "content": {
            "audio/mpeg": {},
            "audio/wav": {},
            "audio/pcm": {},
            "audio/ogg": {},
            "audio/aac": {},
            "audio/flac": {},
        },
    },
    **ERROR_RESPONSES,
}


def build_router(models: RequestModels) -> APIRouter:
    """The native routes, their bodies being ``models`` (the plugins' request fields included)."""
    router = APIRouter(tags=["native"], dependencies=[Depends(require_api_key)], responses=ERROR_RESPONSES)

    # FastAPI documents a form model as url-encoded only; its uploads need multipart (url-encoded
    # works too, with the reference as a URL or base64 in reference_audio).
    multipart = {"schema": {"$ref": f"#/components/schemas/{models.clone_upload.__name__}"}}
    clone_body = {"requestBody": {"content": {"multipart/form-data": multipart}}}

    @router.post("/clone_voice", response_class=Response, responses=AUDIO_RESPONSES, openapi_extra=clone_body)
    @synthesis_route
    async def clone_voice(
        request: Request,
        form: Annotated[models.clone_upload, Form()],  # type: ignore[name-defined]  # built per app: the plugins' fields
        runtime: TTSRuntime = Depends(get_runtime),
        settings: ServerSettings = Depends(get_settings),
    ) -> Response:
        """Clone the voice of a reference clip and speak ``text`` with it."""
        uploads = [getattr(form, name) for name in CLONE_FILES]
        return await serving.clone_voice(request, runtime, settings, form, *uploads)

    @router.post("/speak", response_class=Response, responses=AUDIO_RESPONSES)
    @synthesis_route
    async def speak(
        request: Request,
        body: models.speak,  # type: ignore[name-defined]  # built per app: the plugins' fields
        runtime: TTSRuntime = Depends(get_runtime),
        settings: ServerSettings = Depends(get_settings),
    ) -> Response:
        """Speak ``text`` with a saved role or a built-in voice."""
        return await serving.speak(request, runtime, settings, body)

    @router.post("/multi_speak", response_class=Response, responses=AUDIO_RESPONSES)
    @synthesis_route
    async def multi_speak(
        request: Request,
        body: models.multi_speak,  # type: ignore[name-defined]  # built per app: the plugins' fields
        runtime: TTSRuntime = Depends(get_runtime),
        settings: ServerSettings = Depends(get_settings),
    ) -> Response:
        """Speak a dialogue: each ``<role:NAME>`` segment in its role's voice, a short pause between speakers."""
        return await serving.multi_speak(request, runtime, settings, body)

    @router.get("/server_info", response_model=ServerInfo)
    async def server_info(
        runtime: TTSRuntime = Depends(get_runtime), settings: ServerSettings = Depends(get_settings)
    ) -> ServerInfo:
        """The loaded model, engine, backend, sample rate, voices, roles, capabilities and limits."""
        return await asyncio.to_thread(serving.server_info, runtime, settings, models)  # lists the role store

    return router
