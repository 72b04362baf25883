"""Routes of the OpenAI-compatible API; the logic is in serving.py.

Built per app by :func:`build_router` (the speech body carries the plugins' request fields; see
native/api_router.py for why there is no ``from __future__ import annotations`` here).
"""

import asyncio

from fastapi import APIRouter, Depends, Request, Response

from ..auth import require_api_key
from ..dependencies import get_runtime, get_settings
from ..errors import ERROR_RESPONSES
from ..native.api_router import AUDIO_RESPONSES
from ..plugin_options import RequestModels
from ..route_table import synthesis_route
from ..runtime import TTSRuntime
from ..settings import ServerSettings
from . import serving
from .protocol import ModelCard, ModelList, VoiceList


def build_router(models: RequestModels) -> APIRouter:
    """The OpenAI-compatible routes, the speech body being ``models.speech``."""
    router = APIRouter(
        prefix="/v1", tags=["openai"], dependencies=[Depends(require_api_key)], responses=ERROR_RESPONSES
    )

    @router.post(
        "/audio/speech",
        response_class=Response,
        responses={
            **AUDIO_RESPONSES,
            200: {**AUDIO_RESPONSES[200], "content": {**AUDIO_RESPONSES[200]["content"], "text/event-stream": {}}},
        },
    )
    @synthesis_route
    async def create_speech(
        request: Request,
        body: models.speech,  # type: ignore[name-defined]  # built per app: the plugins' fields
        runtime: TTSRuntime = Depends(get_runtime),
        settings: ServerSettings = Depends(get_settings),
    ) -> Response:
        """OpenAI's speech endpoint: audio bytes, or SSE events with ``stream_format=sse``."""
        return await serving.create_speech(request, runtime, settings, body)

    @router.get("/models", response_model=ModelList)
    async def list_models(runtime: TTSRuntime = Depends(get_runtime)) -> ModelList:
        return serving.list_models(runtime)

    @router.get("/models/{model_id}", response_model=ModelCard)
    async def get_model(model_id: str, runtime: TTSRuntime = Depends(get_runtime)) -> ModelCard:
        return serving.get_model(runtime, model_id)

    @router.get("/audio/voices", response_model=VoiceList)
    async def list_voices(
        runtime: TTSRuntime = Depends(get_runtime), settings: ServerSettings = Depends(get_settings)
    ) -> VoiceList:
        return await asyncio.to_thread(serving.list_voices, runtime, settings)  # the role store may be remote

    return router
