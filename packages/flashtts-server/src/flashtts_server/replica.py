"""Which process answered: the ``X-FlashTTS-Replica`` header on every response.

Behind a load balancer (Ray Serve, Kubernetes) a client needs to know which copy of the server spoke;
a single server sends the header too, so clients never have to guess whether it is there.
"""

from __future__ import annotations

import os
import socket
from typing import Optional

from starlette.types import Receive, Scope, Send

from .response_headers import HttpMiddleware, sending_header

HEADER = "x-flashtts-replica"

_name: Optional[str] = None


def replica_name() -> str:
    """``hostname:pid``, unless a launcher (the Ray Serve deployment) set a more telling name."""
    return _name or f"{socket.gethostname()}:{os.getpid()}"


def set_replica_name(name: str) -> None:
    """Name this process's responses (one process is one replica)."""
    global _name
    _name = name


class ReplicaHeader(HttpMiddleware):
    """Pure ASGI middleware: streamed bodies pass through untouched; only the start message changes."""

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        value = replica_name().encode("latin-1", "replace")
        await self.app(scope, receive, sending_header(send, HEADER.encode(), value))
