"""Errors that carry an HTTP status, so every layer reports bad input the same way."""

from __future__ import annotations


class FlashTTSError(Exception):
    """Base error. ``status`` is the HTTP status a server answers with; ``code`` a stable slug."""

    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, *, param: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param


class InvalidRequest(FlashTTSError):
    """The request is malformed or out of range (400)."""

    status = 400
    code = "invalid_request"


class UnsupportedCapability(FlashTTSError):
    """The loaded engine cannot do what was asked, e.g. cloning on Orpheus (400)."""

    status = 400
    code = "unsupported_capability"


class NotFound(FlashTTSError):
    """An unknown voice, role or model (404)."""

    status = 404
    code = "not_found"


class Conflict(FlashTTSError):
    """The thing to create exists already, e.g. a saved role of that name (409)."""

    status = 409
    code = "conflict"


class AudioDecodeError(InvalidRequest):
    """Reference audio that is empty, not audio, silent or of an unusable length (400)."""

    code = "invalid_audio"


class PayloadTooLarge(InvalidRequest):
    """An upload or text over the configured limits (413)."""

    status = 413
    code = "payload_too_large"


class BackendUnavailable(FlashTTSError):
    """A backend whose library is not installed; the message says which extra to install."""

    status = 503
    code = "backend_unavailable"


class ModelLoadError(FlashTTSError):
    """A model directory that no engine, or more than one engine, recognises."""

    status = 500
    code = "model_load_error"
