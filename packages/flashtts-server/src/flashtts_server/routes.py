"""All API routers, included by create_app, and the web page."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse

from .native.api_router import build_router as native_router
from .openai.api_router import build_router as openai_router
from .plugin_options import RequestModels
from .realtime.cartesia import router as cartesia_router
from .realtime.elevenlabs import router as elevenlabs_router
from .roles.api_router import router as roles_router
from .route_table import RouteTable

STATIC_DIR = Path(__file__).parent / "static"


def include_routes(app: FastAPI, table: RouteTable, models: RequestModels) -> None:
    """Native and role routes at / and again under /v1 (as upstream), the OpenAI routes, the page;
    every one noted in ``table`` with its full path (admission and metrics read it). ``models``: the
    request bodies with the installed plugins' fields (plugin_options.py)."""
    native = native_router(models)
    for prefix in ("", "/v1"):
        table.include(app, native, prefix=prefix)
        table.include(app, roles_router, prefix=prefix)
    table.include(app, openai_router(models))
    table.include(app, cartesia_router)  # Cartesia's realtime WebSocket, /tts/websocket
    table.include(app, elevenlabs_router)  # ElevenLabs' /v1/text-to-speech/{voice_id}/multi-stream-input

    # The page is public (like /docs): it asks for the API key itself and sends it with each call.
    @app.get("/", include_in_schema=False)
    async def web_page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"})
