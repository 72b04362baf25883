"""Admission control for synthesis: refused at once (503 + Retry-After) while the model loads, while
the server shuts down, and past --max_pending_requests, instead of queueing without bound.

The synthesis routes are the ones marked ``@synthesis_route`` in the route table that create_app
fills (route_table.py), never a match against the framework's router. The API key is checked first:
a client without the key gets its 401 before it is counted, and never a 503 that tells it the load.

A request is pending from its admission until its response has been sent whole (a stream: its last
byte), so the count is also what a graceful shutdown waits for. A refusal reads the body away
unparsed first, so the client gets the 503 instead of a connection reset.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Callable, Optional

from flashtts_core.errors import FlashTTSError
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from .auth import bearer_token, key_refusal
from .errors import ServerOverloaded, ServiceLoading, ShuttingDown, error_body
from .lifecycle import Lifecycle, Phase
from .limits import discard_body
from .route_table import RouteTable

logger = logging.getLogger("flashtts.server")

# Seconds a refused client should wait: the queue drains in about a request's time; a load takes longer.
RETRY_AFTER = {"overloaded": 1, "shutting_down": 1, "loading": 5}


def admission_refusal(lifecycle: Lifecycle, max_pending: int) -> Optional[tuple[str, FlashTTSError]]:
    """Why a synthesis must be refused now, as (the reason label of /metrics, the error): the model is
    loading or failed, the server is shutting down, or --max_pending_requests is reached. HTTP, the
    Wyoming listener and realtime sockets all ask this."""
    phase = lifecycle.phase
    if phase is Phase.SHUTTING_DOWN:
        return "shutting_down", ShuttingDown("the server is shutting down; send the request to another instance")
    if phase is Phase.LOADING:
        return "loading", ServiceLoading("the model is still loading; try again shortly (GET /ready says when)")
    if phase is Phase.FAILED:
        return "loading", ServiceLoading("the model could not be loaded; see the server log")
    if lifecycle.pending >= max_pending:
        return "overloaded", ServerOverloaded(
            f"the server is overloaded: {lifecycle.pending} synthesis requests are pending "
            f"(--max_pending_requests {max_pending}); retry shortly"
        )
    return None


class Admission:
    """Pure ASGI middleware guarding the synthesis routes (POST); everything else passes through."""

    def __init__(
        self,
        app: ASGIApp,
        lifecycle: Lifecycle,
        max_pending: int,
        table: RouteTable,
        api_key: Callable[[], Optional[str]] = lambda: None,
        on_reject: Callable[[str], None] = lambda reason: None,
    ):
        table.check()  # a guard with nothing to guard is a configuration error, not a quiet no-op
        self.app = app
        self.lifecycle = lifecycle
        self.max_pending = max_pending
        self.table = table
        self.api_key = api_key
        self.on_reject = on_reject

    def _refusal(self) -> Optional[tuple[str, Exception]]:
        return admission_refusal(self.lifecycle, self.max_pending)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.table.is_synthesis(scope):
            await self.app(scope, receive, send)
            return
        unauthorized = key_refusal(bearer_token(Headers(scope=scope).get("authorization")), self.api_key())
        if unauthorized is not None:
            whole = await discard_body(receive)
            await _send_error(send, unauthorized, [(b"www-authenticate", b"Bearer")], close=not whole)
            return
        refusal = self._refusal()
        if refusal is not None:
            reason, exc = refusal
            self.on_reject(reason)
            whole = await discard_body(receive)  # see limits.DRAIN_LIMIT: a refusal must not end in a reset
            await _send_error(send, exc, [(b"retry-after", str(RETRY_AFTER[reason]).encode())], close=not whole)
            return
        self.lifecycle.pending += 1
        try:
            await self.app(scope, receive, send)
        except asyncio.CancelledError:
            if self.lifecycle.phase is not Phase.SHUTTING_DOWN:
                raise
            # Cut off by the shutdown (--shutdown_timeout passed): an expected end, not a traceback in the log.
            logger.warning("%s cut off by the shutdown", scope["path"])
        finally:
            self.lifecycle.pending -= 1


async def _send_error(send: Send, exc, extra_headers: list[tuple[bytes, bytes]], close: bool) -> None:
    body = json.dumps(error_body(exc.status, exc.message, exc.param, exc.code)).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *extra_headers,
    ]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
