"""The TokenFamily aggregate: one login's chain of rotating refresh tokens.

Each refresh presents the family's current token and gets a new one (the old stops working);
presenting a token that was already rotated away means it leaked, so the whole family is revoked;
logout revokes it too. Only hashes of tokens are recorded. Pure domain code; imported by
`commands/`.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from eventsourcing.domain import Aggregate

from domain.base import TenantAggregate


class TokenFamily(TenantAggregate):
    """`workspace_id` is the user's personal workspace (every event carries a tenant)."""

    class TokenFamilyStarted(Aggregate.Created):
        workspace_id: str
        user_id: str
        token_hash: str
        expires_at: datetime

    class RefreshTokenRotated(Aggregate.Event):
        workspace_id: str
        token_hash: str
        expires_at: datetime

        def apply(self, aggregate: TokenFamily) -> None:
            aggregate.used_hashes.add(aggregate.token_hash)
            aggregate.token_hash = self.token_hash
            aggregate.expires_at = self.expires_at

    class TokenFamilyRevoked(Aggregate.Event):
        workspace_id: str
        reason: str

        def apply(self, aggregate: TokenFamily) -> None:
            aggregate.revoked = True

    def __init__(
        self, workspace_id: str, user_id: str, token_hash: str, expires_at: datetime
    ) -> None:
        self.workspace_id = workspace_id
        self.user_id = user_id
        self.token_hash = token_hash
        self.expires_at = expires_at
        self.used_hashes: set[str] = set()
        self.revoked = False

    @classmethod
    def start(
        cls,
        id: UUID,
        workspace_id: str,
        user_id: str,
        token_hash: str,
        expires_at: datetime,
        now: datetime,
    ) -> TokenFamily:
        return cls._create(
            cls.TokenFamilyStarted,
            id=id,
            workspace_id=workspace_id,
            user_id=user_id,
            token_hash=token_hash,
            expires_at=expires_at,
            timestamp=now,
        )

    def rotate(
        self, presented_hash: str, new_hash: str, expires_at: datetime, now: datetime
    ) -> str:
        """Exchange the current token for a new one. Returns "rotated", or why not: "revoked"
        (already), "reused" (a rotated-away token: the family is revoked now), "expired" or
        "unknown"."""
        if self.revoked:
            return "revoked"
        if presented_hash in self.used_hashes:
            self.record(self.TokenFamilyRevoked, now, reason="reuse of a rotated refresh token")
            return "reused"
        if presented_hash != self.token_hash:
            return "unknown"
        if now >= self.expires_at:
            return "expired"
        self.record(self.RefreshTokenRotated, now, token_hash=new_hash, expires_at=expires_at)
        return "rotated"

    def revoke(self, reason: str, now: datetime) -> None:
        if not self.revoked:
            self.record(self.TokenFamilyRevoked, now, reason=reason)
