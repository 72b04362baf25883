"""Sampling parameters shared by every LLM backend."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, Optional

from .errors import InvalidRequest

# Temperatures below this are greedy: dividing logits by a vanishing temperature overflows them, and
# every backend must read such a request the same way.
GREEDY_TEMPERATURE = 1e-3


@dataclass(frozen=True)
class SamplingParams:
    """Everything a backend needs to sample one sequence.

    ``temperature`` 0 (or below ``GREEDY_TEMPERATURE``, normalised to 0) means greedy. ``top_k`` 0 or less disables top-k; ``top_p`` 1.0 disables nucleus
    sampling. ``repetition_penalty`` divides positive and multiplies negative logits of every token
    already in the prompt or the output (1.0 disables). ``stop_token_ids`` end the sequence and are
    not returned. ``allowed_token_ids``, when set, is the only vocabulary the sampler may pick from
    (stop ids are always allowed). ``seed`` makes one request's sampling reproducible regardless of
    what else runs concurrently.
    """

    temperature: float = 0.8
    top_k: int = 50
    top_p: float = 0.95
    repetition_penalty: float = 1.0
    max_tokens: int = 4096
    stop_token_ids: tuple[int, ...] = ()
    allowed_token_ids: Optional[tuple[int, ...]] = None
    seed: Optional[int] = None
    min_tokens: int = 0
    # Set when max_tokens is the speaking-rate bound of the segment's text (speaking_rate.bounded_params):
    # the request's BoundReport, told when the sequence runs into it. Backends ignore both.
    bound_report: Any = field(default=None, compare=False, repr=False)
    bound_seconds: Optional[float] = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not (self.temperature >= 0):
            raise InvalidRequest("temperature must be >= 0", param="temperature")
        if self.temperature < GREEDY_TEMPERATURE:
            object.__setattr__(self, "temperature", 0.0)
        if not (0 < self.top_p <= 1):
            raise InvalidRequest("top_p must be in (0, 1]", param="top_p")
        if not (self.repetition_penalty > 0):
            raise InvalidRequest("repetition_penalty must be > 0", param="repetition_penalty")
        if self.max_tokens < 1:
            raise InvalidRequest("max_tokens must be >= 1", param="max_tokens")

    def with_overrides(self, overrides: "SamplingOverrides | None" = None, **changes) -> "SamplingParams":
        """A copy with every non-None field of ``overrides`` (and ``changes``) applied."""
        values = {}
        if overrides is not None:
            values = {
                f.name: getattr(overrides, f.name) for f in fields(overrides) if getattr(overrides, f.name) is not None
            }
        values.update({k: v for k, v in changes.items()})
        if "stop_token_ids" in values:
            values["stop_token_ids"] = tuple(values["stop_token_ids"])
        if values.get("allowed_token_ids") is not None:
            values["allowed_token_ids"] = tuple(values["allowed_token_ids"])
        return replace(self, **values)


@dataclass(frozen=True)
class SamplingOverrides:
    """What a request asks for; None keeps the engine's default."""

    temperature: Optional[float] = None
    top_k: Optional[int] = None
    top_p: Optional[float] = None
    repetition_penalty: Optional[float] = None
    max_tokens: Optional[int] = None
    seed: Optional[int] = None

    def __post_init__(self) -> None:
        # Validate eagerly so a route can answer 400 before any work starts.
        base = SamplingParams()
        base.with_overrides(self)
