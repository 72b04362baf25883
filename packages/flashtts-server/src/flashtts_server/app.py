"""The FastAPI application: lifespan loads the model; routers add the API surfaces."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from typing import Optional

from fastapi import FastAPI

from . import __version__
from .errors import install_error_handlers
from .runtime import TTSRuntime
from .settings import ServerSettings

logger = logging.getLogger("flashtts.server")


def create_app(settings: ServerSettings, runtime: Optional[TTSRuntime] = None) -> FastAPI:
    """Build the app. Without ``runtime`` the model is loaded at startup from ``settings``."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        rt = runtime
        if rt is None:
            rt = await TTSRuntime.load(settings)
        app.state.runtime = rt
        try:
            yield
        finally:
            await rt.close()

    app = FastAPI(title="FlashTTS", version=__version__, lifespan=lifespan)
    app.state.settings = settings
    app.state.runtime = runtime
    install_error_handlers(app)

    @app.get("/health", tags=["server"])
    async def health() -> dict:
        rt = app.state.runtime
        return {"status": "ok" if rt is not None else "loading", "engine": rt.engine.name if rt else None}

    from .routes import include_routes

    include_routes(app)
    return app
