"""The FastAPI application: lifespan loads the model; routers add the API surfaces; probes, metrics,
admission control and request ids around them (see lifecycle.py, metrics.py, admission.py)."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from typing import Optional

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from . import __version__
from .admission import Admission
from .errors import install_error_handlers
from .lifecycle import Lifecycle, Phase
from .limits import BodySizeLimit, body_limit_bytes
from .metrics import RequestMetrics, install_metrics
from .plugin_options import request_models
from .replica import ReplicaHeader
from .request_id import RequestIdMiddleware
from .route_table import RouteTable
from .routes import include_routes
from .runtime import TTSRuntime
from .settings import ServerSettings

logger = logging.getLogger("flashtts.server")


def create_app(
    settings: ServerSettings, runtime: Optional[TTSRuntime] = None, background_load: bool = False
) -> FastAPI:
    """Build the app. Without ``runtime`` the model is loaded at startup from ``settings``.

    ``background_load`` (``flashtts serve``): startup returns at once and the model loads behind it,
    so the probes answer while it loads; otherwise startup waits for it (and fails with it)."""
    lifecycle = Lifecycle()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        listeners = []
        if getattr(settings, "wyoming_port", None) is not None:
            # Home Assistant's Wyoming listener, open at once like the HTTP port (wyoming_service.py).
            from .wyoming_service import start_wyoming

            listeners.append(lambda: start_wyoming(app, settings))
        async with lifecycle.running(app, settings, runtime, background=background_load, listeners=listeners):
            yield

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
    app.state.lifecycle = lifecycle
    metrics = install_metrics(app, require_key=settings.metrics_require_api_key)
    install_error_handlers(app)

    @app.get("/health", tags=["server"])
    async def health() -> JSONResponse:
        """Liveness: 200 while the process serves (also while loading and shutting down); 503 once loading failed."""
        rt = app.state.runtime
        if lifecycle.phase is Phase.FAILED:
            return JSONResponse({"status": "failed", "engine": None}, status_code=503)
        return JSONResponse({"status": "ok" if rt is not None else "loading", "engine": rt.engine.name if rt else None})

    @app.get("/ready", tags=["server"], responses={503: {"description": "Loading, shutting down or failed."}})
    async def ready() -> JSONResponse:
        """Readiness: 200 once the model is loaded and the saved roles are prepared; 503 while loading,
        after SIGTERM/SIGINT (shutting down) or when loading failed."""
        return JSONResponse({"status": lifecycle.phase.value}, status_code=200 if lifecycle.ready else 503)

    plugins = runtime.plugins if runtime is not None else None
    table = RouteTable()
    include_routes(app, table, request_models(plugins))
    table.add_app_routes(app)
    table.check()
    app.state.route_table = table

    app.add_middleware(BodySizeLimit, max_bytes=body_limit, on_refuse=lambda: metrics.reject("body_too_large"))
    app.add_middleware(
        Admission,
        lifecycle=lifecycle,
        max_pending=settings.max_pending_requests,
        table=table,
        api_key=lambda: app.state.settings.api_key,
        on_reject=metrics.reject,
    )
    # Outside the body limit and admission, so their refusals are counted and carry a request id too.
    app.add_middleware(RequestMetrics, metrics=metrics, table=table)
    app.add_middleware(RequestIdMiddleware)
    # Outermost of ours: even a 413 from the body limit names the replica that sent it.
    app.add_middleware(ReplicaHeader)
    return app
