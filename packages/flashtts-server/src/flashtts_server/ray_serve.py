"""``flashtts serve --replicas N``: N copies of the server behind Ray Serve's HTTP proxy.

Each replica is a Ray actor process running the very app ``create_app`` builds for a single server
(same settings, routes, limits and lifespan); Ray Serve's proxy listens on --host/--port, spreads the
requests over the replicas and streams their responses through. Ray is imported only in here, and
this module only when scale-out was asked for: a plain ``flashtts serve`` never loads Ray.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any, Callable

from .settings import ServerSettings

logger = logging.getLogger("flashtts.ray")

APP_NAME = "flashtts"
DEPLOYMENT_NAME = "FlashTTS"
# Settings that shape the deployment; a replica is an ordinary single server without them.
SCALE_OUT_FIELDS = ("replicas", "ray_address", "ray_num_cpus", "ray_num_gpus", "min_replicas", "max_replicas")
# A replica that cannot load its model is retried this often, then the deployment fails (Ray's default: 20).
CONSTRUCTOR_RETRIES = 3


class ScaleOutError(Exception):
    """A scale-out flag that cannot work (the CLI prints it as a usage error)."""


def scale_out_requested(settings: ServerSettings) -> bool:
    """--replicas or an autoscaling bound turns Ray Serve on."""
    return any(getattr(settings, name) is not None for name in ("replicas", "min_replicas", "max_replicas"))


def deployment_options(settings: ServerSettings) -> dict[str, Any]:
    """Keyword arguments of ``serve.deployment``: replica count or autoscaling bounds, resources per replica."""
    options: dict[str, Any] = {
        "ray_actor_options": {"num_cpus": settings.ray_num_cpus, "num_gpus": settings.ray_num_gpus},
        # Ray Serve's default (5 requests in a replica at once) would queue what one engine batches; more
        # than the replica admits (--max_pending_requests) would be 503s while another replica idles.
        "max_ongoing_requests": min(settings.llm_batch_size, settings.max_pending_requests),
        "max_constructor_retry_count": CONSTRUCTOR_RETRIES,
        # A stopping replica lets running requests and streams finish as long as a single server would.
        "graceful_shutdown_timeout_s": settings.shutdown_timeout,
    }
    low, high, count = settings.min_replicas, settings.max_replicas, settings.replicas
    if low is None and high is None:
        options["num_replicas"] = count
        return options
    if low is None:
        assert high is not None
        low = min(count if count is not None else 1, high)
    if high is None:
        high = max(count or 1, low, 1)
    initial = count if count is not None else low
    if not low <= initial <= high:
        raise ScaleOutError(
            f"--min_replicas {low} <= --replicas {initial} <= --max_replicas {high} does not hold"
            if count is not None
            else f"--min_replicas {low} is more than --max_replicas {high}"
        )
    options["autoscaling_config"] = {"min_replicas": low, "max_replicas": high, "initial_replicas": initial}
    return options


def replica_values(settings: ServerSettings, cwd: Path | None = None) -> dict[str, Any]:
    """The settings every replica starts from: JSON values, relative local paths made absolute."""
    values = settings.model_dump(mode="json", exclude=set(SCALE_OUT_FIELDS))
    cwd = cwd or Path.cwd()
    for name in path_fields(type(settings)):
        value = values.get(name)
        if isinstance(value, str) and "://" not in value:  # fsspec URLs (s3://…) stay as they are
            values[name] = str((cwd / Path(value).expanduser()).absolute())
    if values.get("role_dir") is None:
        # The engine's default role folder is relative: pin it to where the command ran, once for all replicas.
        from flashtts_core.plugins import get_plugin_manager

        engine_cls = get_plugin_manager().detect_engine(settings.model_path)
        values["role_dir"] = str((cwd / engine_cls.default_role_dir).absolute())
    return values


def path_fields(model: type[ServerSettings]) -> list[str]:
    """Local paths a replica must read as the launching command meant them, whatever its working
    directory: every settings field typed as a Path (model_path, role_dir, plugins' such as snac_path)."""
    import typing

    def has_path(annotation: Any) -> bool:
        return annotation is Path or any(has_path(a) for a in typing.get_args(annotation))

    return [name for name, field in model.model_fields.items() if has_path(field.annotation)]


def replica_app_builder(values: dict[str, Any]) -> Callable[[], Any]:
    """The function Ray Serve calls inside each replica process to build its ASGI app.

    Ray pickles it (by value, with ``values``) into the deployment; it imports everything it needs
    itself, because it runs in a fresh worker process.
    """

    def build_flashtts_app():
        import socket

        from ray import serve

        from flashtts_server.app import create_app
        from flashtts_server.replica import set_replica_name
        from flashtts_server.settings import settings_model

        settings = settings_model()(**values)
        replica = serve.get_replica_context().replica_id.unique_id
        name = f"{socket.gethostname()}:{os.getpid()}/{replica}"
        set_replica_name(name)
        _log_to_stderr(settings.log_level, name)
        app = create_app(settings)
        app.add_middleware(_WithoutRequestIdHeader)
        return app

    return build_flashtts_app


class _WithoutRequestIdHeader:
    """Ray's proxy adds X-Request-ID to every response (the client's id, or one it made and passed
    to the replica as the request's): the replica's own copy would make it appear twice."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_once(message):
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_once)


def _log_to_stderr(level: str, replica: str) -> None:
    """Our loggers in a replica: Ray configures only its own, so without a handler our INFO lines
    (model loading, roles) would be lost. Ray forwards the replica's stderr to the command's log."""
    log = logging.getLogger("flashtts")
    log.setLevel(getattr(logging, level.upper(), logging.INFO))
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s %(name)s [{replica}]: %(message)s"))
        log.addHandler(handler)
        log.propagate = False  # not twice, should the root logger have a handler too


class _Stop(BaseException):
    """SIGTERM/SIGINT: leave whatever Ray call is running and shut down (not an Exception, so that
    no ``except Exception`` inside Ray swallows it)."""


def serve_replicas(settings: ServerSettings) -> int:
    """Start (or join) a Ray cluster, deploy the replicas, serve until SIGTERM/SIGINT, then clean up."""
    try:
        import ray
        from ray import serve
    except ImportError:
        raise ScaleOutError('--replicas needs Ray Serve: pip install "flashtts-server[ray]"') from None

    options = deployment_options(settings)
    values = replica_values(settings)
    # Ray reports usage to its developers unless told not to; this server talks to nobody unasked.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    joined = settings.ray_address is not None
    stopping = threading.Event()

    def on_signal(signum, frame):
        if stopping.is_set():
            logger.info("already stopping (signal %d)", signum)
            return
        stopping.set()
        raise _Stop()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        try:
            # "local" starts a new cluster even when RAY_ADDRESS points at another one.
            ray.init(address=settings.ray_address if joined else "local", include_dashboard=False)
        except (ConnectionError, RuntimeError) as exc:  # no cluster there, or it wants an auth token we lack
            where = f"join the Ray cluster at {settings.ray_address}" if joined else "start a Ray cluster"
            raise ScaleOutError(f"cannot {where}: {_last_line(exc)}") from None
        # ray.init installs its own SIGTERM handler (sys.exit): ours does the cleanup below.
        for sig in previous:
            signal.signal(sig, on_signal)
        _check_resources(ray.cluster_resources(), settings, options, joined)
        try:
            serve.start(http_options={"host": settings.host, "port": settings.port})
        except RuntimeError as exc:  # the proxy could not bind (port taken)
            raise ScaleOutError(
                f"cannot start Ray Serve's proxy on {settings.host}:{settings.port}: {_last_line(exc)}"
            ) from None
        ingress = serve.ingress(replica_app_builder(values))()
        deployment = serve.deployment(ingress, name=DEPLOYMENT_NAME, **options)
        logger.info(
            "deploying %s on Ray (%s): %s",
            DEPLOYMENT_NAME,
            settings.ray_address or "a local cluster started for this command",
            options.get("autoscaling_config") or f"{options['num_replicas']} replicas",
        )
        try:
            serve.run(deployment.bind(), name=APP_NAME, route_prefix="/")
        except RuntimeError as exc:  # Serve gave up on the replicas; their tracebacks are in the log above
            raise ScaleOutError(
                f"the replicas did not start ({_last_line(exc)}); see the replica errors above"
            ) from None
        logger.info("replicas ready behind Ray Serve's proxy on http://%s:%d", settings.host, settings.port)
        while not stopping.wait(1.0):
            pass
    except _Stop:
        logger.info("stopping: replicas first, then %s", "the cluster connection" if joined else "the Ray cluster")
    finally:
        stopping.set()
        _shutdown(ray, serve, joined)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _check_resources(total: dict[str, float], settings: ServerSettings, options: dict[str, Any], joined: bool) -> None:
    """Replicas asking for more than the cluster has would wait in Ray forever: say so at once
    (on a joined cluster, which may grow, only warn)."""
    count = options.get("num_replicas") or options.get("autoscaling_config", {}).get("initial_replicas") or 0
    for flag, key, each in (
        ("--ray_num_cpus", "CPU", settings.ray_num_cpus),
        ("--ray_num_gpus", "GPU", settings.ray_num_gpus),
    ):
        need, have = count * each, total.get(key, 0.0)
        if need > have:
            message = f"{count} replicas with {flag} {each:g} need {need:g} {key}s; the Ray cluster has {have:g}"
            if not joined:
                raise ScaleOutError(f"{message} (lower {flag} or the replica count)")
            logger.warning("%s: the replicas beyond it wait until the cluster grows", message)


def _last_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[-1] if lines else type(exc).__name__


def _shutdown(ray, serve, joined: bool) -> None:
    """Drain and stop the replicas (their lifespans close the engines), then the cluster we started.

    On a joined cluster only this command's application goes; Serve and the cluster stay."""
    if ray.is_initialized():
        try:
            if joined:
                serve.delete(APP_NAME)
            else:
                serve.shutdown()
        except Exception as exc:  # the cluster may already be gone; still disconnect below
            logger.warning("Ray Serve shutdown: %s", exc)
    ray.shutdown()
