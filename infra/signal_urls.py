"""Signal URLs: `POST /api/v1/signals/{token}` lets a system that cannot log in send one signal
to one execution. The token is `<payload>.<signature>`: the payload is base64url JSON
`{"w": workspace, "e": execution, "s": signal name, "x": expiry (unix seconds)}`, the signature
the LinkFlow HMAC (`infra.signing.signature`) over it, keyed per workspace by a key derived from
the deployment's secret key (not the callback signing secret admins can read).

Tokens are made when a node config reads `{{ execution.signal_url.<name> }}` (the domain calls
a `SignalUrls` through `Limits.signal_urls`: a pure function of its settings, so a decision
renders the same URL every time) and verified by `gateways.http.routes_signals`. Imported by
`commands.limits` and the gateway.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from infra.signing import signature

_DERIVATION = "signal-urls"


class TokenInvalid(Exception):
    """A token that is malformed, forged or expired (`expired` says which)."""

    def __init__(self, message: str, expired: bool = False) -> None:
        super().__init__(message)
        self.expired = expired


@dataclass(frozen=True)
class SignalTarget:
    workspace_id: str
    execution_id: str
    name: str


@dataclass(frozen=True)
class SignalUrls:
    """Makes and verifies signal URLs under `public_url`; each lives `ttl_s` from the start of
    its execution."""

    secret_key: str
    public_url: str
    ttl_s: float

    def _key(self, workspace_id: str) -> str:
        return signature(self.secret_key, _DERIVATION, workspace_id.encode())

    def __call__(
        self, workspace_id: str, execution_id: str, name: str, started_at: datetime
    ) -> str:
        expires = int(started_at.timestamp() + self.ttl_s)
        claims = {"w": workspace_id, "e": execution_id, "s": name, "x": expires}
        text = json.dumps(claims, separators=(",", ":"), sort_keys=True).encode()
        payload = base64.urlsafe_b64encode(text).decode().rstrip("=")
        mac = signature(self._key(workspace_id), str(expires), payload.encode())
        return f"{self.public_url.rstrip('/')}/api/v1/signals/{payload}.{mac}"

    def verify(self, token: str, now: datetime) -> SignalTarget:
        payload, _, mac = token.partition(".")
        try:
            padded = payload + "=" * (-len(payload) % 4)
            claims: Any = json.loads(base64.urlsafe_b64decode(padded.encode()))
            workspace_id, execution_id = str(claims["w"]), str(claims["e"])
            name, expires = str(claims["s"]), int(claims["x"])
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise TokenInvalid("the signal token is malformed") from None
        expected = signature(self._key(workspace_id), str(expires), payload.encode())
        if not hmac.compare_digest(expected, mac.lower()):
            raise TokenInvalid("the signal token's signature does not match")
        if now.timestamp() > expires:
            raise TokenInvalid("the signal token has expired", expired=True)
        return SignalTarget(workspace_id, execution_id, name)
