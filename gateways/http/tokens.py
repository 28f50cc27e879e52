"""Access tokens: short-lived JWTs (HS256 pinned — `alg: none` and other algorithms refused;
issuer, expiry and type checked). Refresh tokens are opaque and live in `commands.identity`
(rotating token families). Imported by `gateways.http.auth` and the identity routes.
"""

from __future__ import annotations

import secrets
import time
from uuid import UUID

import jwt

from gateways.http.errors import ApiError
from infra.settings import Settings

ALGORITHM = "HS256"
ACCESS_TYPE = "access"
_REQUIRED_CLAIMS = ["exp", "iat", "sub", "iss"]


def issue_access_token(
    settings: Settings, user_id: UUID, now: float | None = None
) -> tuple[str, int]:
    """A signed access token for `user_id` and its lifetime in seconds."""
    issued = int(time.time() if now is None else now)
    ttl = settings.access_token_ttl_s
    claims = {
        "sub": str(user_id),
        "iss": settings.jwt_issuer,
        "iat": issued,
        "exp": issued + ttl,
        "typ": ACCESS_TYPE,
        "jti": secrets.token_hex(8),
    }
    return jwt.encode(claims, settings.jwt_secret, algorithm=ALGORITHM), ttl


def decode_access_token(settings: Settings, token: str) -> UUID:
    """The user id an access token names; 401 `invalid_token` if it is not one we issued, is
    expired, or is of another type or algorithm."""
    try:
        claims = jwt.decode(
            token,
            settings.jwt_secret,
            algorithms=[ALGORITHM],
            issuer=settings.jwt_issuer,
            options={"require": _REQUIRED_CLAIMS},
        )
        if claims.get("typ") != ACCESS_TYPE:
            raise jwt.InvalidTokenError("not an access token")
        return UUID(claims["sub"])
    except (jwt.PyJWTError, ValueError, TypeError, KeyError):
        raise ApiError(
            401,
            "invalid_token",
            "the access token is invalid or expired",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        ) from None
