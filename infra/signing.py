"""LinkFlow's signed-request protocol (ARCHITECTURE.md section 4): `X-LinkFlow-Timestamp`
(RFC 3339 UTC) and `X-LinkFlow-Signature` = hex HMAC-SHA256(secret, timestamp + "." + raw body);
a timestamp more than 300 s away from the receiver's clock is refused.

Used by outbound callbacks (engine) and by inbound webhooks with `hmac` auth (gateways).
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime

TIMESTAMP_HEADER = "X-LinkFlow-Timestamp"
SIGNATURE_HEADER = "X-LinkFlow-Signature"
WINDOW_S = 300.0


def signature(secret: str, timestamp: str, body: bytes) -> str:
    message = timestamp.encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, now: datetime) -> dict[str, str]:
    """The two headers that sign `body` at `now`."""
    timestamp = now.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: signature(secret, timestamp, body)}


def verify(
    secret: str,
    timestamp: str | None,
    given: str | None,
    body: bytes,
    now: datetime,
    window_s: float = WINDOW_S,
) -> str | None:
    """None when the signature is good and fresh; otherwise why it is refused."""
    if not timestamp or not given:
        return f"the {TIMESTAMP_HEADER} and {SIGNATURE_HEADER} headers are required"
    try:
        signed_at = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return f"{TIMESTAMP_HEADER} is not an RFC 3339 time"
    if signed_at.tzinfo is None:
        return f"{TIMESTAMP_HEADER} must carry a time zone (UTC)"
    if abs((now - signed_at).total_seconds()) > window_s:
        return f"{TIMESTAMP_HEADER} is more than {int(window_s)} s away"
    if not hmac.compare_digest(signature(secret, timestamp, body), given.strip().lower()):
        return "the signature does not match"
    return None
