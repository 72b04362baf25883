"""Request-size limits: a body larger than allowed is refused before it is read into memory."""

from __future__ import annotations

import json
from typing import Optional

from fastapi import UploadFile
from flashtts_core.errors import PayloadTooLarge
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import error_body

MIB = 1024 * 1024
READ_CHUNK = 256 * 1024


def body_limit_bytes(max_upload_mb: float) -> int:
    """The largest request body: one upload as base64 (4/3 of its size) plus room for the other fields."""
    return int(max_upload_mb * MIB * 4 / 3) + MIB


class BodySizeLimit:
    """Pure ASGI middleware: 413 for a declared Content-Length over the limit, and for a body that
    turns out larger while it streams in (chunked uploads). Bytes are counted as they arrive, so a
    huge upload is cut off after ``max_bytes``, not after it was spooled to disk."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def _refuse(self, send: Send) -> None:
        body = json.dumps(
            error_body(
                413,
                f"request body is larger than the limit of {self.max_bytes} bytes (see --max_upload_mb)",
                None,
                PayloadTooLarge.code,
            )
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(send)
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
                    await self._refuse(send)
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
