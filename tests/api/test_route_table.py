"""The route table admission and metrics read: built from the routes as the server declares them,
so no FastAPI release can turn the guard off (0.137+ keeps included routers as lazy entries whose
routes lack the include prefix, and the guarded set came out empty without a word)."""

from __future__ import annotations

import pytest
from fastapi import APIRouter, FastAPI
from flashtts_server.admission import Admission
from flashtts_server.app import create_app
from flashtts_server.lifecycle import Lifecycle
from flashtts_server.route_table import RouteTable, synthesis_route
from flashtts_server.settings import ServerSettings

SYNTHESIS = {
    "/speak",
    "/v1/speak",
    "/clone_voice",
    "/v1/clone_voice",
    "/multi_speak",
    "/v1/multi_speak",
    "/v1/audio/speech",
}


def scope(path: str, method: str = "POST") -> dict:
    return {"type": "http", "path": path, "method": method}


def test_the_app_guards_every_synthesis_route_under_every_prefix():
    table = create_app(ServerSettings()).state.route_table
    assert table.synthesis_paths == SYNTHESIS | {"/tts/websocket", "/v1/text-to-speech/{voice_id}/multi-stream-input"}
    assert all(table.is_synthesis(scope(p)) for p in SYNTHESIS)
    # The realtime WebSocket (Cartesia's shape) is one too; it admits each context itself (realtime/).
    assert table.is_synthesis({"type": "websocket", "path": "/tts/websocket"})
    assert not table.is_synthesis(scope("/tts/websocket", "GET"))
    # Reading routes and other methods pass through.
    assert not table.is_synthesis(scope("/speak", "GET"))
    assert not table.is_synthesis(scope("/add_speaker"))
    assert not table.is_synthesis(scope("/v1/audio/voices", "GET"))
    # Metrics labels are full templates, also for paths with parameters; unknown paths are "other".
    assert table.label(scope("/v1/speak")) == "/v1/speak"
    assert table.label(scope("/v1/models/tts-1", "GET")) == "/v1/models/{model_id}"
    assert table.label(scope("/health", "GET")) == "/health"
    assert table.label(scope("/nowhere", "GET")) == "other"


def test_an_empty_guard_fails_at_startup_not_silently():
    with pytest.raises(RuntimeError, match="admission control"):
        RouteTable().check()
    with pytest.raises(RuntimeError, match="admission control"):
        Admission(app=None, lifecycle=Lifecycle(), max_pending=1, table=RouteTable())


def test_a_marked_endpoint_is_guarded_wherever_it_is_mounted():
    router = APIRouter()

    @router.post("/say")
    @synthesis_route
    async def say() -> dict:
        return {}

    @router.get("/say")
    async def read() -> dict:
        return {}

    app, table = FastAPI(), RouteTable()
    table.include(app, router, prefix="/a")
    table.include(app, router, prefix="/b/c")
    assert table.synthesis_paths == {"/a/say", "/b/c/say"}
    assert table.is_synthesis(scope("/b/c/say")) and not table.is_synthesis(scope("/b/c/say", "GET"))
