"""Server settings: every option of server-api.md §2 (same names and defaults) plus server limits.

Filled, in order of precedence, from CLI flags (``--model_path`` …), ``FLASHTTS_*`` environment
variables, and the defaults below. :class:`ServerSettings` holds what core and the server know;
:func:`settings_model` adds the server flags the installed plugins declare (Spark's ``fix_voice``,
Orpheus' ``snac_path`` …, see ``register_options``): ``flashtts serve`` reads that class.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, Optional

from flashtts_core.options import EngineOptions, declared_options, field_definitions
from pydantic import Field, create_model, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from flashtts_core.plugins import PluginManager


class ServerSettings(EngineOptions, BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLASHTTS_", extra="ignore", protected_namespaces=())

    api_key: Optional[str] = Field(None, description="API key; when set, API routes need 'Authorization: Bearer KEY'.")
    host: str = Field("0.0.0.0", description="Host address to bind.")
    port: int = Field(8000, ge=0, le=65535, description="Port to listen on.")

    # Limits and behaviour beyond the upstream table.
    max_text_length: int = Field(4096, gt=0, description="Maximum characters of input text per request.")
    max_upload_mb: float = Field(20.0, gt=0, description="Maximum size of an uploaded or fetched audio file (MiB).")
    max_reference_seconds: float = Field(60.0, gt=0, description="Maximum duration of a reference clip (seconds).")
    reference_cache_size: int = Field(
        32, ge=0, description="Uploaded clone references kept prepared in memory, keyed by their bytes' hash (0: off)."
    )
    url_timeout: float = Field(10.0, gt=0, description="Timeout for fetching reference audio by URL (seconds).")
    allow_private_urls: bool = Field(
        False, description="Allow reference-audio URLs on loopback, private or link-local addresses."
    )
    default_voice: Optional[str] = Field(
        None,
        description="Voice used for OpenAI voice names the engine lacks (alloy, nova, …); default: engine's first.",
    )
    voice_alias: Optional[str] = Field(
        None,
        description="Voice names mapped onto this server's voices or saved roles, for clients that only offer "
        "OpenAI's names: 'alloy=narrator,nova=female' (checked before the default-voice fallback).",
    )
    speaker_pause: float = Field(0.2, ge=0, le=5, description="Seconds of silence between speakers in /multi_speak.")
    log_level: str = Field("info", description="Log level: debug, info, warning, error.")

    # Operations (lifecycle.py, admission.py, metrics.py, logging_setup.py; README "Operating FlashTTS").
    log_format: Literal["text", "json"] = Field("text", description="Log lines as text, or one JSON object per line.")
    max_pending_requests: int = Field(
        128, ge=1, description="Synthesis requests accepted and not finished; beyond it a 503 with Retry-After."
    )
    shutdown_timeout: float = Field(
        30.0, ge=0, description="Seconds running requests and streams get to finish after SIGTERM/SIGINT."
    )
    metrics_require_api_key: bool = Field(False, description="With --api_key, GET /metrics needs the key too.")
    malloc_trim_interval: float = Field(
        60.0,
        ge=0,
        description="glibc's malloc_trim(0) gives freed memory back when synthesis goes idle, and every this many "
        "seconds at most while busy (memory_trim.py); 0: never.",
    )

    # Home Assistant's Wyoming protocol beside HTTP (wyoming_service.py; README "Home Assistant"). It has no
    # authentication: --api_key does not cover it.
    wyoming_port: Optional[int] = Field(
        None, ge=1, le=65535, description="Also serve text-to-speech over the Wyoming protocol on this TCP port."
    )
    wyoming_host: Optional[str] = Field(None, description="Address the Wyoming listener binds (default: --host).")
    wyoming_max_connections: int = Field(
        32, ge=1, description="Wyoming connections open at once; more are answered with an error and closed."
    )
    wyoming_sample_rate: Optional[int] = Field(
        None, ge=8000, le=48000, description="Rate of the Wyoming audio (Hz); default: the model's own rate."
    )

    # Realtime WebSockets (realtime/session.py, realtime/cartesia.py): Cartesia's /tts/websocket.
    realtime_max_contexts: int = Field(
        16, ge=1, description="Contexts one realtime WebSocket may run at once; more are answered with an error."
    )
    realtime_idle_timeout: float = Field(
        300.0, gt=0, description="Seconds a realtime WebSocket with no context running may go without a message."
    )
    realtime_send_timeout: float = Field(
        30.0, gt=0, description="Seconds a realtime WebSocket may leave its audio unread before it is closed."
    )

    # Scale-out (flashtts_server.ray_serve): unset replicas and bounds mean one plain uvicorn server, no Ray.
    replicas: Optional[int] = Field(
        None, ge=1, description="Serve N replicas of this server behind Ray Serve's HTTP proxy on host:port."
    )
    ray_address: Optional[str] = Field(
        None, description="Join this Ray cluster (auto, or HEAD_IP:6379) instead of starting one."
    )
    ray_num_cpus: float = Field(1.0, ge=0, description="CPUs Ray reserves for each replica.")
    ray_num_gpus: float = Field(
        0.0, ge=0, description="GPUs Ray gives each replica (set it to llm_tensor_parallel_size)."
    )
    min_replicas: Optional[int] = Field(
        None, ge=0, description="Autoscaling: fewest replicas (Ray Serve autoscaling_config)."
    )
    max_replicas: Optional[int] = Field(
        None, ge=1, description="Autoscaling: most replicas (Ray Serve autoscaling_config)."
    )

    @field_validator("voice_alias")
    @classmethod
    def _aliases_parse(cls, value: Optional[str]) -> Optional[str]:
        parse_voice_aliases(value)  # a malformed list is a startup error, not a surprise per request
        return value

    @property
    def voice_aliases(self) -> dict[str, str]:
        """``--voice_alias`` as {alias (lower case): voice or role}."""
        return parse_voice_aliases(self.voice_alias)


def parse_voice_aliases(value: Optional[str]) -> dict[str, str]:
    """``"alloy=narrator, nova=female"`` -> {"alloy": "narrator", "nova": "female"}; names are matched
    without regard to case, targets are kept as written (role names are case-sensitive)."""
    aliases: dict[str, str] = {}
    for item in (value or "").split(","):
        if not item.strip():
            continue
        alias, sep, target = item.partition("=")
        alias, target = alias.strip().lower(), target.strip()
        if not sep or not alias or not target:
            raise ValueError(f"voice_alias entries are NAME=VOICE pairs separated by commas; got {item.strip()!r}")
        if alias in aliases and aliases[alias] != target:
            raise ValueError(f"voice_alias names {alias!r} twice")
        aliases[alias] = target
    return aliases


_assembled: dict[int, tuple["PluginManager", type[ServerSettings]]] = {}


def plugin_described_fields(base: type[EngineOptions], plugins: "PluginManager") -> dict[str, tuple[Any, FieldInfo]]:
    """``create_model`` arguments that give core's ``backend`` and ``llm_tensor_parallel_size`` help
    naming the installed backends (core names none): ``LLM backend: torch, vllm, …``."""
    from copy import copy

    sharding = [name for name, cls in plugins.backends.items() if getattr(cls, "tensor_parallel", False)]
    texts = {
        "backend": f"LLM backend: {', '.join(plugins.backends)}." if plugins.backends else None,
        "llm_tensor_parallel_size": (
            f"GPUs one LLM is split across (tensor parallel; {', '.join(sharding)})." if sharding else None
        ),
    }
    fields: dict[str, tuple[Any, FieldInfo]] = {}
    for name, text in texts.items():
        if text is not None:
            field = copy(base.model_fields[name])
            field.description = text
            fields[name] = (field.annotation, field)
    return fields


def settings_model(plugins: "Optional[PluginManager]" = None) -> type[ServerSettings]:
    """:class:`ServerSettings` with the server flags of the installed plugins (``plugins``, by default
    the entry-point plugins), as real fields: ``--fix_voice``, ``FLASHTTS_FIX_VOICE``, typed and
    validated at startup. Built once per plugin manager."""
    if plugins is None:
        from flashtts_core.plugins import get_plugin_manager

        plugins = get_plugin_manager()
    cached = _assembled.get(id(plugins))
    if cached is not None and cached[0] is plugins:
        return cached[1]
    declared = declared_options(plugins.options.values(), "server", taken=ServerSettings.model_fields)
    fields = {**field_definitions(declared), **plugin_described_fields(ServerSettings, plugins)}
    model = create_model("ServerSettings", __base__=ServerSettings, __module__=__name__, **fields)
    _assembled[id(plugins)] = (plugins, model)
    return model
