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


# Tokens already verified, so that a client's requests do not each pay for the signature check
# and claim parsing (a tenth of a gateway's CPU per started execution): (secret, issuer, token)
# → (user id, expiry). A token is immutable and its expiry is kept, so a hit answers what
# verifying again would; the bound evicts the oldest entries.
_VERIFIED: dict[tuple[str, str, str], tuple[UUID, float]] = {}
VERIFIED_CACHE_SIZE = 10_000


def decode_access_token(settings: Settings, token: str, now: float | None = None) -> UUID:
    """The user id an access token names; 401 `invalid_token` if it is not one we issued, is
    expired (at `now`, the current time by default), or is of another type or algorithm."""
    at = time.time() if now is None else now
    key = (settings.jwt_secret, settings.jwt_issuer, token)
    hit = _VERIFIED.get(key)
    if hit is not None:
        if at < hit[1]:
            return hit[0]
        del _VERIFIED[key]
    user_id, expires = _verify(settings, token, at)
    if len(_VERIFIED) >= VERIFIED_CACHE_SIZE:
        del _VERIFIED[next(iter(_VERIFIED))]
    _VERIFIED[key] = (user_id, expires)
    return user_id


def _verify(settings: Settings, token: str, now: float) -> tuple[UUID, float]:
    """Signature, algorithm, issuer and required claims by PyJWT; the times against `now` here
    (PyJWT reads its own clock), as PyJWT checks them: `exp` after now, `iat` and `nbf` (when
    present) not after it, each an integer."""
    try:
        claims = jwt.decode(
            token,
            settings.jwt_secret,
            algorithms=[ALGORITHM],
            issuer=settings.jwt_issuer,
            options={
                "require": _REQUIRED_CLAIMS,
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
            },
        )
        if claims.get("typ") != ACCESS_TYPE:
            raise jwt.InvalidTokenError("not an access token")
        expires = int(claims["exp"])
        if expires <= now:
            raise jwt.ExpiredSignatureError("expired")
        if int(claims["iat"]) > now or int(claims.get("nbf", now)) > now:
            raise jwt.ImmatureSignatureError("not yet valid")
        return UUID(claims["sub"]), float(expires)
    except (jwt.PyJWTError, ValueError, TypeError, OverflowError, KeyError):
        raise ApiError(
            401,
            "invalid_token",
            "the access token is invalid or expired",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        ) from None
