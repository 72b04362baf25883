"""Request and response models mirroring OpenAI's speech API, field by field, plus our extensions."""

from __future__ import annotations

from typing import Literal, Optional, Union

from flashtts_core.request import Level
from pydantic import BaseModel, Field, field_validator

from ..synthesis_fields import DEFAULT_FORMAT, SamplingFields

# OpenAI's voice names; a request naming one the engine lacks gets the default voice.
OPENAI_VOICES = frozenset(
    {"alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse", "marin", "cedar"}
)


class VoiceId(BaseModel):
    id: str = Field(..., min_length=1, description="A voice name (or URL / base64 audio to clone).")


class SpeechRequest(SamplingFields):
    """POST /v1/audio/speech."""

    model: Optional[str] = Field(
        None, max_length=256, description="Model id; any value is accepted (see GET /v1/models)."
    )
    input: str = Field(..., min_length=1, description="Text to synthesize.")
    voice: Optional[Union[str, VoiceId]] = Field(
        None,
        description="A saved role, a built-in voice, an alias (--voice_alias), an http(s) URL or base64 audio "
        "to clone; OpenAI names the engine lacks (alloy, nova, …) use the default voice.",
    )
    instructions: Optional[str] = Field(None, max_length=4096, description="Accepted; engines may ignore it.")
    response_format: str = Field(DEFAULT_FORMAT, description="mp3, opus, aac, flac, wav, pcm.")
    speed: float = Field(1.0, ge=0.25, le=4.0, description="0.25–4.0, mapped onto the engine's speed levels.")
    stream_format: Literal["audio", "sse"] = Field(
        "audio", description="audio: the bytes; sse: speech.audio.delta events."
    )
    # Extensions beyond OpenAI's fields.
    stream: bool = Field(True, description="Send audio as it is generated (false: one whole file, exact WAV sizes).")
    sample_rate: Optional[int] = Field(
        None, ge=8000, le=48000, description="Output rate (Hz); default 24000, as OpenAI's formats are."
    )
    pitch: Optional[Level] = Field(None, description="Pitch level (engines with pitch control).")
    reference_text: Optional[str] = Field(
        None, max_length=10_000, description="Transcript of URL/base64 reference audio."
    )

    @field_validator("voice", mode="before")
    @classmethod
    def _voice_is_a_name_or_an_id_object(cls, value: object) -> object:
        # Without this a wrong shape reads as two errors about the union's members ("voice.str: …").
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, dict) and isinstance(value.get("id"), str) and value["id"].strip():
            return value
        raise ValueError('must be a voice name or an object like {"id": "NAME"}')


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "flashtts"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class VoiceCard(BaseModel):
    id: str
    name: str
    type: Literal["role", "builtin", "alias"]
    alias_of: Optional[str] = Field(
        default=None, description="For an alias (--voice_alias): the voice or role it names."
    )


class VoiceList(BaseModel):
    object: Literal["list"] = "list"
    data: list[VoiceCard]
    voices: list[str] = Field(description="The same names as a plain list.")
