"""FastAPI dependencies shared by the routers: the loaded runtime and the settings."""

from __future__ import annotations

from fastapi import Request

from .errors import ServiceLoading
from .runtime import TTSRuntime
from .settings import ServerSettings


def get_runtime(request: Request) -> TTSRuntime:
    runtime = request.app.state.runtime
    if runtime is None:
        raise ServiceLoading("the model is still loading; try again shortly")
    return runtime


def get_settings(request: Request) -> ServerSettings:
    return request.app.state.settings
