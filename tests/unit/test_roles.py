"""The permission matrix and member-change rules, written out here independently of the code."""

from __future__ import annotations

import pytest

from domain.roles import ROLES, Action, may_change_member, permits

# role -> actions it may do (docs/permissions.md)
EXPECTED = {
    "owner": set(Action),
    "admin": set(Action) - {Action.TRANSFER_OWNERSHIP, Action.DELETE_WORKSPACE},
    "member": {
        Action.READ,
        Action.WRITE_WORKFLOWS,
        Action.RUN_EXECUTIONS,
        Action.WRITE_CREDENTIALS,
        Action.WRITE_VARIABLES,
        Action.DECIDE_APPROVALS,
    },
    "viewer": {Action.READ, Action.DECIDE_APPROVALS},
    "auditor": {Action.READ, Action.READ_AUDIT},
}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("action", list(Action))
def test_matrix(role: str, action: Action) -> None:
    assert permits(role, action) == (action in EXPECTED[role])


@pytest.mark.parametrize("role", [None, "", "stranger", "OWNER"])
def test_unknown_roles_may_do_nothing(role: str | None) -> None:
    assert not any(permits(role, action) for action in Action)


@pytest.mark.parametrize(
    ("actor", "current", "new", "allowed"),
    [
        ("owner", None, "owner", True),
        ("owner", "owner", "admin", True),
        ("owner", "member", None, True),
        ("admin", None, "admin", True),
        ("admin", "viewer", "member", True),
        ("admin", "member", None, True),
        ("admin", None, "owner", False),
        ("admin", "member", "owner", False),
        ("admin", "owner", "admin", False),
        ("admin", "owner", None, False),
        ("member", None, "viewer", False),
        ("viewer", "viewer", None, False),
    ],
)
def test_member_changes(actor: str, current: str | None, new: str | None, allowed: bool) -> None:
    assert may_change_member(actor, current, new) is allowed
