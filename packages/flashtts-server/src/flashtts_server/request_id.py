"""X-Request-Id: every response carries one, and every log line written while serving it.

A client's own id is echoed when it is a short token of safe characters (a UUID, a trace id); any
other value is replaced by a fresh one, so a header can never smuggle control characters or
kilobytes of text into responses and log files.
"""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar
from typing import Optional

from starlette.types import Receive, Scope, Send

from .response_headers import HttpMiddleware, sending_header

HEADER = b"x-request-id"
MAX_LENGTH = 128
# Letters, digits and the punctuation of common id formats (UUIDs, AWS "Root=1-…;Parent=…", base64).
_SAFE = re.compile(rf"[A-Za-z0-9._:;=+/@-]{{1,{MAX_LENGTH}}}")

# Set for the duration of one request; asyncio tasks and to_thread workers started by it inherit it.
REQUEST_ID: ContextVar[Optional[str]] = ContextVar("flashtts_request_id", default=None)
_current = REQUEST_ID  # the name this module uses


def current_request_id() -> Optional[str]:
    """The id of the request being served in this context, or None outside a request."""
    return _current.get()


def accepted_request_id(value: Optional[bytes]) -> str:
    """The client's id when it is acceptable, else a new random one (32 hex digits)."""
    if value is not None:
        try:
            text = value.decode("ascii")
        except UnicodeDecodeError:
            text = ""
        if _SAFE.fullmatch(text):
            return text
    return uuid.uuid4().hex


class RequestIdMiddleware(HttpMiddleware):
    """Pure ASGI middleware: picks the request's id, exposes it to logging, adds it to the response."""

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        sent = next((v for k, v in scope.get("headers", ()) if k == HEADER), None)
        request_id = accepted_request_id(sent)
        scope.setdefault("state", {})["request_id"] = request_id
        token = _current.set(request_id)
        await self.app(scope, receive, sending_header(send, HEADER, request_id.encode("ascii")))
        # Not reset on an exception: Starlette's outermost error handler logs it and answers the 500
        # after this returns, and its log line should carry the id too (the task ends right after).
        _current.reset(token)
