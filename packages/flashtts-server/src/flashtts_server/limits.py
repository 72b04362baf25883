"""Request-size limits: a body larger than allowed is refused before it is read into memory."""

from __future__ import annotations

import json
from typing import Callable, Optional

from fastapi import UploadFile
from flashtts_core.errors import PayloadTooLarge
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import error_body

MIB = 1024 * 1024
READ_CHUNK = 256 * 1024


def body_limit_bytes(max_upload_mb: float) -> int:
    """The largest request body: one upload as base64 (4/3 of its size) plus room for the other fields."""
    return int(max_upload_mb * MIB * 4 / 3) + MIB


# A refused upload is read on and thrown away before the refusal is sent: closing a socket that still
# holds unread bytes makes the kernel send a TCP reset, and a client still uploading (urllib, browsers)
# then reports "connection reset" and never sees the 413. Only past this many bytes (an absurd upload)
# is the connection closed on it after all.
DRAIN_LIMIT = 1024 * MIB


class BodySizeLimit:
    """Pure ASGI middleware: 413 for a declared Content-Length over the limit, and for a body that
    turns out larger while it streams in (chunked uploads). Bytes are counted as they arrive, so a
    huge upload is cut off after ``max_bytes``, not after it was spooled to disk; the rest of it is
    discarded unread (see DRAIN_LIMIT), so the client receives the 413."""

    def __init__(self, app: ASGIApp, max_bytes: int, on_refuse: Callable[[], None] = lambda: None):
        self.app = app
        self.max_bytes = max_bytes
        self.on_refuse = on_refuse

    async def _refuse(self, send: Send, close: bool) -> None:
        self.on_refuse()
        body = json.dumps(
            error_body(
                413,
                f"request body is larger than the limit of {self.max_bytes} bytes (see --max_upload_mb)",
                None,
                PayloadTooLarge.code,
            )
        ).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if close:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            if _expects_continue(scope):  # the client waits for "100 Continue": it has sent nothing yet
                await self._refuse(send, close=True)
                return
            # Read away first: a client that sent "Connection: close" (urllib does) has its connection
            # closed right after the answer, and unread bytes would turn that close into a reset.
            whole = declared <= DRAIN_LIMIT and await discard_body(receive)
            await self._refuse(send, close=not whole)
            return

        received = 0
        refused = False

        async def counting_receive() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request" and not refused:
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    refused = True
                    whole = await discard_body(receive, first=message)
                    await self._refuse(send, close=not whole)
                    # The app sees a vanished client and stops reading; its own answer is dropped.
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not refused:
                await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not refused:
                raise


async def discard_body(receive: Receive, limit: int = DRAIN_LIMIT, first: Optional[Message] = None) -> bool:
    """Read and drop the rest of a request body (after ``first``, a message already received), so a
    refusal sent next reaches the client; True when the body ended within ``limit`` bytes."""
    message = first
    drained = 0
    while message is None or message.get("more_body", False):
        message = await receive()
        if message["type"] != "http.request":
            return False  # the client went away
        drained += len(message.get("body", b""))
        if drained > limit:
            return False
    return True


def _expects_continue(scope: Scope) -> bool:
    return any(k == b"expect" and v.lower() == b"100-continue" for k, v in scope.get("headers", ()))


def _content_length(scope: Scope) -> Optional[int]:
    for key, value in scope.get("headers", ()):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def read_upload(upload: UploadFile, max_bytes: int, param: str) -> bytes:
    """An uploaded file's bytes, counted while reading: over ``max_bytes`` is a 413."""
    parts: list[bytes] = []
    total = 0
    while True:
        chunk = await upload.read(READ_CHUNK)
        if not chunk:
            break
        total += len(chunk)
        if total > max_bytes:
            raise PayloadTooLarge(f"{param} is larger than the limit of {max_bytes / MIB:g} MiB", param=param)
        parts.append(chunk)
    return b"".join(parts)
