"""One JSON error shape for every route: OpenAI's ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

import logging
from typing import Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from flashtts_core.errors import FlashTTSError, InvalidRequest
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger("flashtts.server")


class ErrorDetail(BaseModel):
    message: str = Field(description="What is wrong, in one line.")
    type: str = Field(description="invalid_request_error, authentication_error, not_found_error, …")
    param: Optional[str] = Field(None, description="The request field the error is about, when there is one.")
    code: Optional[str] = Field(None, description="A machine-readable code, when there is one.")


class ErrorResponse(BaseModel):
    """The body of every 4xx and 5xx answer."""

    error: ErrorDetail


# The routers' documented errors: a 400 for bad input (never FastAPI's 422) and the other 4xx, one shape.
ERROR_RESPONSES: dict = {
    400: {"model": ErrorResponse, "description": "Bad input; error.param names the field."},
    "4XX": {"model": ErrorResponse, "description": "Other client errors (401, 404, 409, 413, 415 …)."},
}

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable",
}


class AuthenticationFailed(FlashTTSError):
    """A missing or wrong API key (401)."""

    status = 401
    code = "invalid_api_key"


class ServiceLoading(FlashTTSError):
    """The model is not loaded yet (503)."""

    status = 503
    code = "model_loading"


class StringAboveMaxLength(InvalidRequest):
    """OpenAI's answer to a string field over its limit (400, not 413), e.g. ``input`` of /v1/audio/speech."""

    code = "string_above_max_length"


class ServerOverloaded(FlashTTSError):
    """More synthesis requests pending than --max_pending_requests allows (503 + Retry-After)."""

    status = 503
    code = "server_overloaded"


class ShuttingDown(FlashTTSError):
    """The server got SIGTERM/SIGINT and finishes what it has; new synthesis goes elsewhere (503)."""

    status = 503
    code = "shutting_down"


# FastAPI's detail when the body parser itself fails (not a json.JSONDecodeError, which is a validation error).
_FASTAPI_PARSE_ERROR = "There was an error parsing the body"


def error_body(status: int, message: str, param: Optional[str] = None, code: Optional[str] = None) -> dict:
    return {"error": {"message": message, "type": _TYPES.get(status, "server_error"), "param": param, "code": code}}


def error_response(
    status: int, message: str, param: Optional[str] = None, code: Optional[str] = None, headers=None
) -> JSONResponse:
    return JSONResponse(error_body(status, message, param, code), status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(FlashTTSError)
    async def _flashtts(request: Request, exc: FlashTTSError):
        if exc.status >= 500:
            logger.error("%s %s: %s", request.method, request.url.path, exc.message)
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return error_response(exc.status, exc.message, exc.param, exc.code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        first = errors[0] if errors else {}
        if first.get("type") == "json_invalid":
            detail = (first.get("ctx") or {}).get("error", "")
            return error_response(
                400, f"request body is not valid JSON ({detail})".replace(" ()", ""), None, "invalid_json"
            )
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "form")]
        param = ".".join(loc) or None
        msg = first.get("msg", "invalid request")
        if first.get("type") == "value_error":
            msg = msg.removeprefix("Value error, ")
        if not param and first.get("type") in ("missing", "model_attributes_type", "dict_type"):
            msg = "the request body must be a JSON object (Content-Type: application/json)"
        message = f"{param}: {msg}" if param else msg
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
        return error_response(400, message, param, "invalid_request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        code = None
        if message == _FASTAPI_PARSE_ERROR:  # bad UTF-8, too deeply nested JSON, an integer of 5000 digits …
            message = "the request body could not be parsed: send it as UTF-8 JSON or as form data"
            code = "invalid_body"
        return error_response(exc.status_code, message, None, code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        # This answer is sent outside every middleware (Starlette's error handler), so add the id here.
        request_id = getattr(request.state, "request_id", None)
        headers = {"X-Request-Id": request_id} if request_id else None
        return error_response(500, "internal server error", None, "internal_error", headers=headers)
