"""The API key check: ``Authorization: Bearer KEY`` on every API route when ``--api_key`` is set.

Without ``--api_key`` any credentials are accepted, including the ``Bearer None`` that some clients
send when their own key setting is empty. :func:`key_refusal` is the one check: the route dependency
and the admission middleware (which must answer 401 before it counts or refuses anything) both use it.
"""

from __future__ import annotations

import hmac
from typing import Optional

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .errors import AuthenticationFailed

# auto_error=False: a missing header must give our 401 in the one error shape, not FastAPI's 403.
bearer_scheme = HTTPBearer(auto_error=False, description="The server's --api_key, when one is set.")


def bearer_token(authorization: Optional[str]) -> Optional[str]:
    """The token of an ``Authorization: Bearer TOKEN`` header value, else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def key_refusal(presented: Optional[str], expected: Optional[str]) -> Optional[AuthenticationFailed]:
    """None when ``presented`` may pass (always, without a server key), else the 401 to answer."""
    if not expected:
        return None
    if presented is None:
        return AuthenticationFailed("missing API key: send 'Authorization: Bearer YOUR_KEY'")
    # Constant-time comparison, so response timing does not reveal how much of a guess was right.
    if not hmac.compare_digest(presented.encode("utf-8"), expected.encode("utf-8")):
        return AuthenticationFailed("invalid API key")
    return None


async def require_api_key(
    request: Request, credentials: Optional[HTTPAuthorizationCredentials] = Depends(bearer_scheme)
) -> None:
    """Refuse the request (401) unless it carries the configured key; a no-op without ``--api_key``."""
    refusal = key_refusal(credentials.credentials if credentials else None, request.app.state.settings.api_key)
    if refusal is not None:
        raise refusal
