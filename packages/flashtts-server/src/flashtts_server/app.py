"""The FastAPI application: lifespan loads the model; routers add the API surfaces."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from typing import Optional

from fastapi import FastAPI

from . import __version__
from .errors import install_error_handlers
from .limits import BodySizeLimit, body_limit_bytes
from .replica import ReplicaHeader
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
        ready = await rt.preload_roles()
        logger.info("roles ready: %s", ", ".join(ready) or "none")
        app.state.runtime = rt
        try:
            yield
        finally:
            await rt.close()

    body_limit = body_limit_bytes(settings.max_upload_mb)
    app = FastAPI(
        title="FlashTTS",
        version=__version__,
        description="Text to speech: native FlashTTS routes, OpenAI-compatible /v1/audio/speech, saved roles.",
        lifespan=lifespan,
        # Base64 audio may arrive as a form field: let a field be as large as a whole body may be.
        form_limits={"max_part_size": body_limit},
    )
    app.state.settings = settings
    app.state.runtime = runtime
    app.add_middleware(BodySizeLimit, max_bytes=body_limit)
    # Outermost of ours: even a 413 from the body limit names the replica that sent it.
    app.add_middleware(ReplicaHeader)
    install_error_handlers(app)

    @app.get("/health", tags=["server"])
    async def health() -> dict:
        rt = app.state.runtime
        return {"status": "ok" if rt is not None else "loading", "engine": rt.engine.name if rt else None}

    from .routes import include_routes

    include_routes(app)
    return app
