"""Request and response models of the native API (server-api.md §4.1–4.3)."""

from __future__ import annotations

from typing import Any, Optional

from flashtts_core.request import Level
from pydantic import BaseModel, Field

from ..synthesis_fields import OutputFields, SamplingFields


class SpeakRequest(SamplingFields, OutputFields):
    """POST /speak: synthesis with a saved role or a built-in voice."""

    name: str = Field(..., min_length=1, max_length=256, description="A saved role or a built-in voice.")
    text: str = Field(..., min_length=1, description="Text to synthesize.")
    pitch: Optional[Level] = Field(None, description="Pitch level (engines with pitch control).")
    speed: Optional[Level] = Field(None, description="Speed level (engines with speed control).")


class CloneForm(SamplingFields, OutputFields):
    """POST /clone_voice (multipart form): the text fields; the files are parameters of their own."""

    text: str = Field(..., min_length=1, description="Text to synthesize.")
    reference_audio: Optional[str] = Field(None, description="Reference audio as an http(s) URL or base64.")
    reference_text: Optional[str] = Field(None, max_length=10_000, description="Transcript of the reference audio.")
    pitch: Optional[Level] = Field(None, description="Pitch level (engines with pitch control).")
    speed: Optional[Level] = Field(None, description="Speed level (engines with speed control).")


class MultiSpeakRequest(SamplingFields, OutputFields):
    """POST /multi_speak: ``<role:NAME>`` or ``<role:NAME,pitch:LEVEL,speed:LEVEL>`` tagged text."""

    text: str = Field(..., min_length=1, description="e.g. '<role:female> Hello! <role:male> Hi there.'")
    pitch: Optional[Level] = Field(None, description="Pitch for segments whose tag sets none.")
    speed: Optional[Level] = Field(None, description="Speed for segments whose tag sets none.")


class OptionInfo(BaseModel):
    """A request field of a plugin's options that the loaded engine or backend takes (the web page
    shows an input for each)."""

    name: str
    owner: str = Field(description="The engine or backend the option belongs to.")
    title: str = Field(description="A short label.")
    description: Optional[str] = None
    type: str = Field(description="JSON Schema type: integer, number, string or boolean.")
    default: Any = None
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    choices: Optional[list[Any]] = None


class ServerInfo(BaseModel):
    model: str
    engine: str
    backend: Optional[str]
    sample_rate: int
    capabilities: dict[str, bool]
    voices: list[str] = Field(description="Built-in voices of the engine.")
    roles: list[str] = Field(description="Saved roles in role_dir.")
    formats: list[str]
    default_voice: Optional[str]
    active_generations: int
    limits: dict[str, float]
    auth_required: bool
    version: str
    options: list[OptionInfo] = Field(
        default_factory=list, description="Request fields of the loaded engine's and backend's own options."
    )
