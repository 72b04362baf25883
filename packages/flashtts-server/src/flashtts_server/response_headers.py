"""Setting one header on every response from pure ASGI middleware, streamed bodies untouched."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


def sending_header(send: Send, name: bytes, value: bytes) -> Send:
    """``send`` that puts ``name: value`` on the response start message, replacing any the app set.

    ``name`` is lower-case, as ASGI header names are; only the start message changes."""

    async def send_with_header(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != name]
            message = {**message, "headers": [*headers, (name, value)]}
        await send(message)

    return send_with_header


class HttpMiddleware:
    """Pure ASGI middleware that acts on HTTP requests only (others pass through): :meth:`http` serves one."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.http(scope, receive, send)

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError
