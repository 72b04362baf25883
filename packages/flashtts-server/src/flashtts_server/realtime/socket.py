"""What every realtime WebSocket adapter shares: the receive loop (idle timeout, a client that stopped
reading), and sending JSON messages with back-pressure. A protocol subclasses :class:`RealtimeSocket`,
implements :meth:`RealtimeSocket.handle` for its client messages and the session core's Output
(session.py) for its server messages."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Optional, TypeGuard

import numpy as np
from fastapi import WebSocket
from flashtts_core.errors import FlashTTSError, InvalidRequest
from starlette.websockets import WebSocketDisconnect

from .session import ClientGone, Context, RealtimeSession, WordTimings

logger = logging.getLogger("flashtts.realtime")

POLICY_VIOLATION = 1008
MAX_MESSAGE_CHARS = 1 << 20
MAX_CONTEXT_ID_CHARS = 256


def valid_context_id(context_id: object) -> TypeGuard[str]:
    """Whether a client's context_id is a non-empty string of at most MAX_CONTEXT_ID_CHARS characters."""
    return isinstance(context_id, str) and bool(context_id.strip()) and len(context_id) <= MAX_CONTEXT_ID_CHARS


def context_id_refusal(context_id: object) -> tuple[Optional[str], InvalidRequest]:
    """The error for a context_id that is not valid, and the id to report it under (None where it is unfit
    to echo)."""
    return (
        context_id if isinstance(context_id, str) and len(context_id) <= MAX_CONTEXT_ID_CHARS else None,
        InvalidRequest(
            f"context_id must be a non-empty string of at most {MAX_CONTEXT_ID_CHARS} characters",
            param="context_id",
        ),
    )


class RealtimeSocket:
    """One client of a realtime route: the receive loop, and :meth:`send` that the Output uses."""

    def __init__(self, websocket: WebSocket, route: str):
        self.websocket = websocket
        self.route = route
        settings = websocket.app.state.settings
        self.session = RealtimeSession(websocket.app.state, self, route, max_contexts=settings.realtime_max_contexts)
        self.idle_timeout = settings.realtime_idle_timeout
        self.send_timeout = settings.realtime_send_timeout
        self.lock = asyncio.Lock()
        self.gone = False
        self.closing = False  # the client asked to close the socket (handle sets it; serve closes)
        self.stalled = asyncio.Event()  # a send waited send_timeout: the client stopped reading

    async def handle(self, text: str) -> None:
        """One client message (a text frame, or a binary one decoded as UTF-8)."""
        raise NotImplementedError

    # The session core's Output (session.py), in the protocol's messages.
    async def audio(self, context: Context, samples: np.ndarray, step_seconds: float) -> None:
        raise NotImplementedError

    async def timestamps(self, context: Context, timings: WordTimings) -> None:
        raise NotImplementedError

    async def flush_done(self, context: Context, flush_id: int) -> None:
        raise NotImplementedError

    async def done(self, context: Context) -> None:
        raise NotImplementedError

    async def error(self, context_id: Optional[str], error: FlashTTSError) -> None:
        raise NotImplementedError

    async def parse(self, text: str) -> Optional[dict]:
        """A client message as a JSON object; None, with the error sent, where it is not one."""
        if len(text) > MAX_MESSAGE_CHARS:
            await self.error(None, InvalidRequest(f"a message may be at most {MAX_MESSAGE_CHARS} characters"))
            return None
        try:
            message = json.loads(text)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            await self.error(None, InvalidRequest("a message must be a JSON object"))
            return None
        return message

    async def serve(self) -> None:
        stalled = asyncio.ensure_future(self.stalled.wait())
        try:
            while True:
                receive = asyncio.ensure_future(self.websocket.receive())
                await asyncio.wait({receive, stalled}, timeout=self.idle_timeout, return_when=asyncio.FIRST_COMPLETED)
                if not receive.done():
                    receive.cancel()
                    await asyncio.gather(receive, return_exceptions=True)
                    if stalled.done():
                        logger.warning(
                            "realtime %s: the client left its audio unread for %g s; the socket is closed",
                            self.route,
                            self.send_timeout,
                        )
                        return
                    if self.session.idle:
                        logger.info("realtime %s: idle for %g s; closed", self.route, self.idle_timeout)
                        await self.websocket.close(code=1000, reason="idle")
                        return
                    continue
                message = receive.result()
                if message["type"] == "websocket.disconnect":
                    return
                text = message.get("text")
                if text is None and message.get("bytes") is not None:
                    text = message["bytes"].decode("utf-8", errors="replace")
                await self.handle(text or "")
                if self.closing:
                    await self.session.close()
                    await self.websocket.close(code=1000)
                    return
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            stalled.cancel()
            self.gone = True
            await self.session.close()

    async def send(self, message: dict) -> None:
        if self.gone:
            raise ClientGone("the socket is closed")
        try:
            async with self.lock:
                # Back-pressure: a client that stops reading stalls its contexts here (uvicorn waits for the
                # transport to drain), so memory stays bounded; after send_timeout the socket is given up.
                await asyncio.wait_for(
                    self.websocket.send_text(json.dumps(message, separators=(",", ":"))), self.send_timeout
                )
        except asyncio.TimeoutError:
            self.gone = True
            self.stalled.set()
            raise ClientGone(f"the client left its audio unread for {self.send_timeout:g} s") from None
        except (WebSocketDisconnect, RuntimeError, OSError) as exc:  # uvicorn's ClientDisconnected is an OSError
            self.gone = True
            raise ClientGone(f"the socket is closed ({type(exc).__name__})") from None
