"""Pure tests of the access aggregates: refresh-token families, workspace members, API keys."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from domain.api_key import ApiKey
from domain.base import DomainError
from domain.token_family import TokenFamily
from domain.workspace import Workspace

NOW = datetime(2026, 1, 1, tzinfo=UTC)
LATER = NOW + timedelta(days=30)


def family() -> TokenFamily:
    return TokenFamily.start(uuid4(), "ws", "user", "h1", LATER, NOW)


def test_rotation_replaces_the_current_token() -> None:
    f = family()
    assert f.rotate("h1", "h2", LATER, NOW) == "rotated"
    assert f.token_hash == "h2"
    assert f.rotate("h2", "h3", LATER, NOW) == "rotated"


def test_reuse_of_a_rotated_token_revokes_the_family() -> None:
    f = family()
    f.rotate("h1", "h2", LATER, NOW)
    assert f.rotate("h1", "hx", LATER, NOW) == "reused"
    assert f.revoked
    assert f.rotate("h2", "h3", LATER, NOW) == "revoked"  # the current one is dead too
    assert type(f.pending_events[-1]).__name__ == "TokenFamilyRevoked"


@pytest.mark.parametrize(
    ("presented", "at", "outcome"), [("nope", NOW, "unknown"), ("h1", LATER, "expired")]
)
def test_unknown_or_expired_tokens_are_refused_without_revoking(
    presented: str, at: datetime, outcome: str
) -> None:
    f = family()
    assert f.rotate(presented, "h2", LATER + timedelta(days=1), at) == outcome
    assert not f.revoked and f.token_hash == "h1"


def test_logout_revokes() -> None:
    f = family()
    f.revoke("logout", NOW)
    assert f.rotate("h1", "h2", LATER, NOW) == "revoked"


def workspace() -> Workspace:
    return Workspace.create(uuid4(), "w", "owner-1", NOW)


def test_members_are_added_changed_and_removed() -> None:
    ws = workspace()
    ws.add_member("u2", "viewer", NOW)
    ws.change_role("u2", "admin", NOW)
    assert ws.role_of("u2") == "admin"
    ws.remove_member("u2", NOW)
    assert ws.role_of("u2") is None


def test_a_workspace_always_keeps_an_owner() -> None:
    ws = workspace()
    for change in (
        lambda: ws.remove_member("owner-1", NOW),
        lambda: ws.change_role("owner-1", "admin", NOW),
    ):
        with pytest.raises(DomainError) as caught:
            change()
        assert caught.value.code == "last_owner"
    ws.add_member("u2", "owner", NOW)
    ws.change_role("owner-1", "member", NOW)  # another owner remains
    assert ws.role_of("owner-1") == "member"


@pytest.mark.parametrize(
    ("change", "code"),
    [
        (lambda ws: ws.add_member("owner-1", "viewer", NOW), "already_member"),
        (lambda ws: ws.add_member("u3", "king", NOW), "invalid_role"),
        (lambda ws: ws.change_role("u3", "viewer", NOW), "not_found"),
        (lambda ws: ws.remove_member("u3", NOW), "not_found"),
    ],
)
def test_member_refusals(change, code: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DomainError) as caught:
        change(workspace())
    assert caught.value.code == code


def test_a_deleted_workspace_has_no_members() -> None:
    ws = workspace()
    ws.delete(NOW)
    assert ws.role_of("owner-1") is None


def test_api_key_revocation_and_use() -> None:
    key = ApiKey.create(uuid4(), "ws", "ci", "member", "hash", "u", NOW)
    key.use(NOW + timedelta(minutes=1))
    assert key.last_used_at == NOW + timedelta(minutes=1)
    key.revoke(NOW)
    key.use(NOW + timedelta(minutes=2))  # a revoked key records no use
    assert key.revoked and key.last_used_at == NOW + timedelta(minutes=1)
    with pytest.raises(DomainError):
        ApiKey.create(uuid4(), "ws", "ci", "root", "hash", "u", NOW)
