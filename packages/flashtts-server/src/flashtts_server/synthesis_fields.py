"""Request fields every synthesis route shares, and their mapping onto the core request type."""

from __future__ import annotations

from typing import Any, ClassVar, Optional, TypeVar

from flashtts_core.errors import InvalidRequest, PayloadTooLarge
from flashtts_core.options import DeclaredOption, field_definitions
from flashtts_core.request import Level, SynthesisRequest, VoiceReference
from flashtts_core.sampling import SamplingOverrides
from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

from .settings import ServerSettings

DEFAULT_FORMAT = "mp3"
DEFAULT_SPLIT = 50
SPLIT_MAX = 100_000


def clamp_split_field(value: object) -> object:
    """``length_threshold``/``window_size`` as the earlier release took them: any integer, clamped into
    [1, SPLIT_MAX]; None (JSON null, an absent form field) is the default. Anything else is left to
    the int validation (a 422-style 400 for "abc")."""
    if value is None or value == "":
        return DEFAULT_SPLIT
    if not isinstance(value, (int, float, str)):
        return value
    try:
        number = int(value) if not isinstance(value, float) or value.is_integer() else value
    except (TypeError, ValueError, OverflowError):
        return value
    if isinstance(number, int) and not isinstance(number, bool):
        return min(max(number, 1), SPLIT_MAX)
    return value


class SamplingFields(BaseModel):
    """Sampling and text-splitting fields; None keeps the engine's own default."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False, protected_namespaces=())

    temperature: Optional[float] = Field(
        None, ge=0, le=5, description="Randomness; 0 (or below 0.001) is greedy. Default: the engine's."
    )
    top_k: Optional[int] = Field(
        None, ge=0, le=1_000_000, description="Top-K sampling (0 disables). Default: the engine's."
    )
    top_p: Optional[float] = Field(None, gt=0, le=1, description="Nucleus sampling threshold. Default: the engine's.")
    repetition_penalty: Optional[float] = Field(
        None, ge=0.01, le=10, description="Penalty on repeated tokens (1 disables). Default: the engine's."
    )
    max_tokens: Optional[int] = Field(
        None, ge=1, le=1_000_000, description="Maximum tokens to generate per text segment."
    )
    seed: Optional[int] = Field(None, ge=0, le=2**63 - 1, description="Seed for reproducible sampling.")
    # Clamped into [1, SPLIT_MAX], never refused, and null is the default: the earlier release took any
    # integer, and published clients send e.g. length_threshold 1000000 ("never split") by default.
    length_threshold: int = Field(
        DEFAULT_SPLIT,
        description=f"Texts longer than this are split into segments (clamped to 1–{SPLIT_MAX}; null: {DEFAULT_SPLIT}).",
    )
    window_size: int = Field(
        DEFAULT_SPLIT,
        description=f"Length of each segment when splitting (clamped to 1–{SPLIT_MAX}; null: {DEFAULT_SPLIT}).",
    )

    @field_validator("length_threshold", "window_size", mode="before")
    @classmethod
    def _clamp_split_fields(cls, value: object) -> object:
        return clamp_split_field(value)

    # Request fields of the installed plugins' options (with_plugin_fields): name -> owners.
    plugin_fields: ClassVar[dict[str, tuple[str, ...]]] = {}

    def plugin_options(self) -> dict[str, dict[str, Any]]:
        """The plugin fields this request set, by owner (``SynthesisRequest.options``)."""
        options: dict[str, dict[str, Any]] = {}
        for name, owners in self.plugin_fields.items():
            value = getattr(self, name, None)
            if name in self.model_fields_set and value is not None:
                for owner in owners:
                    options.setdefault(owner, {})[name] = value
        return options


class OutputFields(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    stream: bool = Field(False, description="Stream the audio as it is generated.")
    response_format: str = Field(DEFAULT_FORMAT, description="mp3, opus, aac, flac, wav, pcm (or a plugin's format).")
    sample_rate: Optional[int] = Field(
        None, ge=8000, le=48000, description="Resample the output to this rate (Hz); default: the model's rate."
    )


def sampling_overrides(fields: SamplingFields) -> SamplingOverrides:
    return SamplingOverrides(
        temperature=fields.temperature,
        top_k=fields.top_k,
        top_p=fields.top_p,
        repetition_penalty=fields.repetition_penalty,
        max_tokens=fields.max_tokens,
        seed=fields.seed,
    )


def check_text_length(text: str, settings: ServerSettings, param: str = "text") -> None:
    """A 400 for text with nothing but whitespace, a 413 for text over --max_text_length; both name ``param``."""
    if not text.strip():
        raise InvalidRequest(f"{param} must not be empty or only whitespace", param=param)
    if len(text) > settings.max_text_length:
        raise PayloadTooLarge(
            f"{param} is {len(text)} characters long; the limit is {settings.max_text_length} (see --max_text_length)",
            param=param,
        )


def synthesis_request(
    text: str,
    fields: SamplingFields,
    *,
    stream: bool,
    voice: Optional[str] = None,
    reference: Optional[VoiceReference] = None,
    pitch: Optional[Level] = None,
    speed: Optional[Level] = None,
    instructions: Optional[str] = None,
) -> SynthesisRequest:
    return SynthesisRequest(
        text=text,
        voice=voice,
        reference=reference,
        pitch=pitch,
        speed=speed,
        sampling=sampling_overrides(fields),
        length_threshold=fields.length_threshold,
        window_size=fields.window_size,
        stream=stream,
        instructions=instructions,
        options=fields.plugin_options(),
    )


M = TypeVar("M", bound=SamplingFields)


def with_plugin_fields(model: type[M], declared: dict[str, DeclaredOption]) -> type[M]:
    """``model`` (a SamplingFields subclass) with the request fields of the installed plugins' options,
    under the same class name (the OpenAPI schema shows them with their owner's bounds and help)."""
    fields = {n: d for n, d in declared.items() if n not in model.model_fields}
    if not fields:
        return model
    assembled = create_model(model.__name__, __base__=model, __module__=model.__module__, **field_definitions(fields))
    assembled.__doc__ = model.__doc__
    assembled.plugin_fields = {n: d.owners for n, d in fields.items()}
    return assembled
