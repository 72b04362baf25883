"""The ``flashtts serve`` process: uvicorn running the app, with a drain before its own shutdown.

On SIGTERM or SIGINT the lifecycle (lifecycle.py) turns to shutting down: new synthesis is refused
(503), /ready turns 503, and the running requests and streams get at most --shutdown_timeout
seconds to finish before the engine and its backend close. A second signal cuts the running
requests off at once (the engine still closes); a third stops the process without waiting for
anything.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from typing import TYPE_CHECKING, NoReturn, Optional

import uvicorn

from .app import create_app
from .lifecycle import Lifecycle, Phase
from .memory_report import install_from_env

if TYPE_CHECKING:
    from .settings import ServerSettings

logger = logging.getLogger("flashtts.server")


class GracefulServer(uvicorn.Server):
    """uvicorn, with a drain before its own shutdown: on the first SIGTERM/SIGINT the lifecycle turns
    to shutting down, and the server exits once no synthesis is pending or ``shutdown_timeout`` passed."""

    def __init__(self, config: uvicorn.Config, lifecycle: Lifecycle, shutdown_timeout: float):
        super().__init__(config)
        self.lifecycle = lifecycle
        self.shutdown_timeout = shutdown_timeout
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._draining = False
        self._cut = False

    async def startup(self, sockets=None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets=sockets)

    def handle_exit(self, sig: int, frame) -> None:
        if self._loop is None or not self.started:  # before the port opened: uvicorn's own exit
            super().handle_exit(sig, frame)
            return
        if self._draining:
            if not self._cut and not self.should_exit:
                # A second signal while draining: cut the running requests now, then close as usual.
                logger.info("%s again: cutting the running requests off now", signal.Signals(sig).name)
                self._cut = True
            else:  # a third, or one while uvicorn itself winds down: stop without waiting for anything
                self.force_exit = True
                super().handle_exit(sig, frame)
            return
        self._draining = True
        self.lifecycle.begin_shutdown()
        logger.info(
            "%s: shutting down; new synthesis is refused, %d pending request(s) get up to %g s to finish",
            signal.Signals(sig).name,
            self.lifecycle.pending,
            self.shutdown_timeout,
        )
        # A signal handler runs between two bytecodes of the loop's thread: hand the drain to the loop.
        loop = self._loop
        loop.call_soon_threadsafe(lambda: loop.create_task(self._drain()))

    async def _drain(self) -> None:
        deadline = time.monotonic() + self.shutdown_timeout
        while self.lifecycle.pending and time.monotonic() < deadline and not self._cut:
            await asyncio.sleep(0.05)
        if self._cut:
            self.config.timeout_graceful_shutdown = 0
        else:
            if self.lifecycle.pending:
                logger.warning(
                    "%d request(s) still running after --shutdown_timeout %g s: cutting them off",
                    self.lifecycle.pending,
                    self.shutdown_timeout,
                )
            # What is still open (a probe, a role upload) gets the time left, at least a second; then uvicorn
            # cancels it.
            self.config.timeout_graceful_shutdown = max(1, int(deadline - time.monotonic() + 0.999))
        self.should_exit = True

    def stop_after_failed_load(self) -> None:
        self.should_exit = True


def serve(settings: "ServerSettings") -> NoReturn:
    """Run ``flashtts serve`` until a signal, then exit: 0 after a clean shutdown, 1 when the model
    failed to load."""
    app = create_app(settings, background_load=True)
    install_from_env(app)  # FLASHTTS_MEMORY_REPORT: a diagnostic, off by default
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        log_config=None,  # our handler (logging_setup) formats uvicorn's lines too
    )
    server = GracefulServer(config, app.state.lifecycle, settings.shutdown_timeout)
    app.state.lifecycle.on_failure = server.stop_after_failed_load
    server.run()
    code = 1 if app.state.lifecycle.phase is Phase.FAILED else 0
    exit_now(code)


def exit_now(code: int) -> NoReturn:
    """Leave once everything is closed, without the interpreter's teardown: it spends seconds collecting
    the objects torch and transformers made, and native libraries' exit handlers can abort it (mlx on
    Linux once ended a finished `flashtts infer` with "terminate called without an active exception")."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
