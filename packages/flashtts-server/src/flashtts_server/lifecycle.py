"""The server's life: loading, ready, shutting down (or failed), and the uvicorn server that runs it.

``flashtts serve`` opens its port at once and loads the model behind it, so /health (liveness) and
/ready (readiness) answer while a large model loads. On SIGTERM or SIGINT the server keeps
listening but refuses new synthesis (503) and turns /ready 503, lets the running requests and
streams finish (at most --shutdown_timeout seconds), then closes the engine and its backend. A
second signal cuts the running requests off at once (the engine still closes); a third stops the
process without waiting for anything.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import signal
import sys
import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, AsyncIterator, Callable, NoReturn, Optional

import uvicorn
from flashtts_core.errors import FlashTTSError

from .memory_trim import start_trimmer

if TYPE_CHECKING:
    from fastapi import FastAPI

    from .runtime import TTSRuntime
    from .settings import ServerSettings

logger = logging.getLogger("flashtts.server")


class Phase(str, enum.Enum):
    LOADING = "loading"
    READY = "ready"
    SHUTTING_DOWN = "shutting_down"
    FAILED = "failed"


class Lifecycle:
    """Where the server is in its life, and how many synthesis requests it has accepted and not finished."""

    def __init__(self) -> None:
        self.phase = Phase.LOADING
        self.pending = 0
        # Called when a background load fails; the uvicorn server sets it to stop the process.
        self.on_failure: Optional[Callable[[], None]] = None

    @property
    def ready(self) -> bool:
        return self.phase is Phase.READY

    def begin_shutdown(self) -> None:
        if self.phase is not Phase.FAILED:
            self.phase = Phase.SHUTTING_DOWN

    async def load(self, app: "FastAPI", settings: "ServerSettings", runtime: "Optional[TTSRuntime]") -> None:
        """Load the model (unless given one), prepare the saved roles, then serve."""
        from .runtime import TTSRuntime

        rt = runtime if runtime is not None else await TTSRuntime.load(settings)
        ready = await rt.preload_roles()
        logger.info("roles ready: %s", ", ".join(ready) or "none")
        app.state.runtime = rt
        if self.phase is Phase.LOADING:  # a shutdown that began meanwhile stays a shutdown
            self.phase = Phase.READY
            logger.info("ready to serve")

    async def _load_in_background(self, app, settings, runtime) -> None:
        try:
            await self.load(app, settings, runtime)
        except asyncio.CancelledError:
            raise
        except FlashTTSError as exc:
            self._failed(f"the model could not be loaded: {exc.message}")
        except Exception:
            logger.exception("the model could not be loaded")
            self._failed(None)

    def _failed(self, message: Optional[str]) -> None:
        if message:
            logger.error("%s", message)
        self.phase = Phase.FAILED
        if self.on_failure is not None:
            self.on_failure()

    @asynccontextmanager
    async def running(
        self, app: "FastAPI", settings: "ServerSettings", runtime: "Optional[TTSRuntime]", background: bool
    ) -> AsyncIterator[None]:
        """The app's lifespan. ``background``: yield at once and load meanwhile (the port opens before
        the model is ready); otherwise load first, and a failure fails the startup."""
        wyoming = None
        if getattr(settings, "wyoming_port", None) is not None:
            # Home Assistant's Wyoming listener, open at once like the HTTP port (wyoming_service.py); a port
            # that cannot be opened fails the startup as the HTTP port does (uvicorn exits with status 3).
            from .wyoming_service import start_wyoming

            wyoming = await start_wyoming(app, settings)
        task = None
        if background:
            task = asyncio.create_task(self._load_in_background(app, settings, runtime))
        else:
            await self.load(app, settings, runtime)
        trimmer = start_trimmer(app, getattr(settings, "malloc_trim_interval", 0.0))
        try:
            yield
        finally:
            self.begin_shutdown()
            if trimmer is not None:
                trimmer.cancel()
                await asyncio.gather(trimmer, return_exceptions=True)
            if wyoming is not None:
                await wyoming.close()
            if task is not None and not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            rt = app.state.runtime
            if rt is not None:
                await rt.close()
                logger.info("engine and backend closed")


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
    from .app import create_app
    from .memory_report import install_from_env

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
    # Everything is closed: leave now. The interpreter's own teardown would spend seconds collecting
    # the objects torch and transformers made (uvicorn, re-raising the signal, skipped it the same way).
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
