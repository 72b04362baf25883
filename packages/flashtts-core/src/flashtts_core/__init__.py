"""FlashTTS core: the plugin contract and the machinery shared by every engine and backend."""

from .backend import BackendConfig, GenerationOutput, LLMBackend
from .codec import AudioCodec
from .engine import Capabilities, Engine
from .errors import (
    AudioDecodeError,
    BackendUnavailable,
    Conflict,
    FlashTTSError,
    InvalidRequest,
    ModelLoadError,
    NotFound,
    PayloadTooLarge,
    UnsupportedCapability,
)
from .hookspecs import hookimpl
from .options import EngineOptions
from .request import Level, SynthesisRequest, VoiceReference, WordTiming
from .sampling import SamplingOverrides, SamplingParams

__all__ = [
    "AudioCodec",
    "AudioDecodeError",
    "BackendConfig",
    "BackendUnavailable",
    "Capabilities",
    "Conflict",
    "Engine",
    "EngineOptions",
    "FlashTTSError",
    "GenerationOutput",
    "InvalidRequest",
    "LLMBackend",
    "Level",
    "ModelLoadError",
    "NotFound",
    "PayloadTooLarge",
    "SamplingOverrides",
    "SamplingParams",
    "SynthesisRequest",
    "UnsupportedCapability",
    "VoiceReference",
    "WordTiming",
    "hookimpl",
]
__version__ = "0.1.0"
