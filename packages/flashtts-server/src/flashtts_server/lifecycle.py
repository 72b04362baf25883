"""The server's life: loading, ready, shutting down (or failed), and what the app does at startup and
shutdown (:meth:`Lifecycle.running`, its lifespan).

``flashtts serve`` opens its port at once and loads the model behind it, so /health (liveness) and
/ready (readiness) answer while a large model loads. On SIGTERM or SIGINT the server keeps
listening but refuses new synthesis (503) and turns /ready 503, lets the running requests and
streams finish (at most --shutdown_timeout seconds), then closes the engine and its backend. The
process that runs the app and turns signals into that drain is runner.py's; this module knows no
app module (app.py, admission.py and the listeners import it, not the other way round).
"""

from __future__ import annotations

import asyncio
import enum
import logging
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, AsyncIterator, Awaitable, Callable, Optional, Sequence

from flashtts_core.errors import FlashTTSError
from flashtts_core.openmp import TeamlessThreadPool

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
        # Called when a background load fails; the uvicorn server (runner.py) sets it to stop the process.
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

        loop = asyncio.get_running_loop()
        # Threads that ran torch or ggml kernels lead OpenMP teams, and libgomp throttles every team's
        # spin-wait while more threads than cores are in teams (flashtts_core.openmp): the default
        # executor's threads give their team up after each job, and the loading ones leave.
        loader = TeamlessThreadPool(thread_name_prefix="flashtts-load")
        loop.set_default_executor(loader)
        try:
            rt = runtime if runtime is not None else await TTSRuntime.load(settings)
        finally:
            loop.set_default_executor(TeamlessThreadPool(thread_name_prefix="flashtts-io"))
            loader.shutdown(wait=False)
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
        self,
        app: "FastAPI",
        settings: "ServerSettings",
        runtime: "Optional[TTSRuntime]",
        background: bool,
        listeners: Sequence[Callable[[], Awaitable[Any]]] = (),
    ) -> AsyncIterator[None]:
        """The app's lifespan. ``background``: yield at once and load meanwhile (the port opens before
        the model is ready); otherwise load first, and a failure fails the startup. ``listeners``
        open other sockets beside the HTTP port (Home Assistant's Wyoming, from app.py): each returns
        something with an async ``close()``, called once shutdown begins, before the engine closes.
        One that cannot open fails the startup as the HTTP port does (uvicorn exits with status 3)."""
        opened = []
        try:
            for start in listeners:
                opened.append(await start())
        except BaseException:
            for listener in reversed(opened):
                await listener.close()
            raise
        task = None
        trimmer = None
        try:
            if background:
                task = asyncio.create_task(self._load_in_background(app, settings, runtime))
            else:  # a failed load closes the listeners too
                await self.load(app, settings, runtime)
            trimmer = start_trimmer(app, getattr(settings, "malloc_trim_interval", 0.0))
            yield
        finally:
            self.begin_shutdown()
            if trimmer is not None:
                trimmer.cancel()
                await asyncio.gather(trimmer, return_exceptions=True)
            for listener in reversed(opened):
                await listener.close()
            if task is not None and not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            rt = app.state.runtime
            if rt is not None:
                await rt.close()
                logger.info("engine and backend closed")
