"""The API key check: ``Authorization: Bearer KEY`` on every API route when ``--api_key`` is set."""

from __future__ import annotations

import hmac
from typing import Optional

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .errors import AuthenticationFailed

# auto_error=False: a missing header must give our 401 in the one error shape, not FastAPI's 403.
bearer_scheme = HTTPBearer(auto_error=False, description="The server's --api_key, when one is set.")


async def require_api_key(
    request: Request, credentials: Optional[HTTPAuthorizationCredentials] = Depends(bearer_scheme)
) -> None:
    """Refuse the request (401) unless it carries the configured key; a no-op without ``--api_key``."""
    expected = request.app.state.settings.api_key
    if not expected:
        return
    if credentials is None:
        raise AuthenticationFailed("missing API key: send 'Authorization: Bearer YOUR_KEY'")
    # Constant-time comparison, so response timing does not reveal how much of a guess was right.
    if not hmac.compare_digest(credentials.credentials.encode("utf-8"), expected.encode("utf-8")):
        raise AuthenticationFailed("invalid API key")
