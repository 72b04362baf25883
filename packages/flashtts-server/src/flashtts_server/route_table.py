"""The app's routes as the server itself declared them: path templates, methods, and which ones run
the model for a client (the synthesis routes that admission guards).

The middlewares (admission, request metrics) read this table, never the framework's router: how
FastAPI stores included routers is its own business (0.137+ keeps an included router as one lazy
entry whose routes carry the path without the include prefix), and a guard that matched against it
turned itself off without a word. The table is filled where the routes are included, and
``check`` refuses to start a server whose guarded set came out empty.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterable, Optional, TypeVar

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute, APIWebSocketRoute
from starlette.routing import compile_path
from starlette.types import Scope

F = TypeVar("F", bound=Callable)

_MARK = "__flashtts_synthesis__"
OTHER_ROUTE = "other"


def synthesis_route(endpoint: F) -> F:
    """Mark an endpoint as running the model for a client: admission guards it, wherever it is mounted.
    Put it under the router's decorator: ``@router.post(...)`` then ``@synthesis_route``."""
    setattr(endpoint, _MARK, True)
    return endpoint


def is_synthesis(endpoint: object) -> bool:
    return bool(getattr(endpoint, _MARK, False))


@dataclass(frozen=True)
class RouteEntry:
    path: str  # the template, e.g. /v1/models/{model_id}
    methods: frozenset[str]  # empty for a WebSocket route
    synthesis: bool
    websocket: bool
    regex: re.Pattern

    def matches(self, path: str) -> bool:
        return self.regex.match(path) is not None


class RouteTable:
    """Every route of the app with its full path; filled by :meth:`include` and :meth:`add_app_routes`."""

    def __init__(self) -> None:
        self.entries: list[RouteEntry] = []
        self._seen: set[tuple[str, frozenset[str], bool]] = set()

    def _add(self, path: str, methods: Iterable[str], endpoint: object, websocket: bool) -> None:
        key = (path, frozenset(methods), websocket)
        if key in self._seen:
            return
        self._seen.add(key)
        regex, _, _ = compile_path(path)
        self.entries.append(RouteEntry(path, key[1], is_synthesis(endpoint), websocket, regex))

    def _add_route(self, route: object, prefix: str = "") -> None:
        if isinstance(route, APIWebSocketRoute):
            self._add(prefix + route.path, (), route.endpoint, websocket=True)
        elif isinstance(route, APIRoute):
            self._add(prefix + route.path, route.methods or (), route.endpoint, websocket=False)

    def include(self, app: FastAPI, router: APIRouter, prefix: str = "") -> None:
        """``app.include_router(router, prefix=prefix)``, noting the router's routes with their full paths."""
        app.include_router(router, prefix=prefix)
        for route in router.routes:
            self._add_route(route, prefix)

    def add_app_routes(self, app: FastAPI) -> None:
        """The routes declared on the app itself (``@app.get``): probes, /metrics, the page."""
        for route in app.router.routes:
            self._add_route(route)

    @property
    def synthesis_paths(self) -> frozenset[str]:
        return frozenset(e.path for e in self.entries if e.synthesis)

    def check(self) -> None:
        """Fail loudly at startup when no route is guarded: admission would silently be off."""
        if not self.synthesis_paths:
            raise RuntimeError(
                "no synthesis route was found in the route table: admission control (--max_pending_requests) "
                "would be off; every synthesis endpoint must be marked with @synthesis_route"
            )

    def find(self, scope: Scope) -> Optional[RouteEntry]:
        path = scope.get("path", "")
        websocket = scope.get("type") == "websocket"
        method = scope.get("method", "")
        fallback = None
        for entry in self.entries:
            if entry.websocket != websocket or not entry.matches(path):
                continue
            if websocket or method in entry.methods:
                return entry
            fallback = fallback or entry  # the path exists, the method does not (a 405)
        return fallback

    def is_synthesis(self, scope: Scope) -> bool:
        entry = self.find(scope)
        if entry is None or not entry.synthesis:
            return False
        return entry.websocket or scope.get("method") == "POST"

    def label(self, scope: Scope) -> str:
        """The route template serving ``scope`` (a metrics label), or ``other``."""
        entry = self.find(scope)
        return entry.path if entry is not None else OTHER_ROUTE
