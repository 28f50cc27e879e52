"""The permission matrix: which workspace role may do which action. The one place that decides
(docs/permissions.md writes the same table down for people).

Pure domain code: imported by the gateways (every workspace route names its action) and by
`commands/` (member changes, which also depend on the target's role).
"""

from __future__ import annotations

from enum import StrEnum

ROLES: tuple[str, ...] = ("owner", "admin", "member", "viewer", "auditor")


class Action(StrEnum):
    READ = "read"  # workflows, executions, members, variables, credential metadata
    WRITE_WORKFLOWS = "workflows.write"  # create, update, activate, deactivate, archive
    RUN_EXECUTIONS = "executions.run"  # start, cancel
    WRITE_CREDENTIALS = "credentials.write"
    WRITE_VARIABLES = "variables.write"
    MANAGE_MEMBERS = "members.manage"
    MANAGE_API_KEYS = "api_keys.manage"  # create, list, revoke
    READ_SIGNING_SECRET = "signing_secret.read"  # the callback signing secret
    TRANSFER_OWNERSHIP = "ownership.transfer"  # make someone an owner, change/remove an owner
    DELETE_WORKSPACE = "workspace.delete"
    READ_AUDIT = "audit.read"  # the workspace's event log, past states, checkpoints
    # Decide an approval node (the node's `approvers.roles` then narrow it): everyone but the
    # auditor, who changes nothing.
    DECIDE_APPROVALS = "approvals.decide"


_EVERYONE = frozenset(ROLES)
_BUILDERS = frozenset({"owner", "admin", "member"})
_ADMINS = frozenset({"owner", "admin"})
_OWNERS = frozenset({"owner"})
_AUDITORS = frozenset({"owner", "admin", "auditor"})

MATRIX: dict[Action, frozenset[str]] = {
    Action.READ: _EVERYONE,
    Action.WRITE_WORKFLOWS: _BUILDERS,
    Action.RUN_EXECUTIONS: _BUILDERS,
    Action.WRITE_CREDENTIALS: _BUILDERS,
    Action.WRITE_VARIABLES: _BUILDERS,
    Action.MANAGE_MEMBERS: _ADMINS,
    Action.MANAGE_API_KEYS: _ADMINS,
    Action.READ_SIGNING_SECRET: _ADMINS,
    Action.TRANSFER_OWNERSHIP: _OWNERS,
    Action.DELETE_WORKSPACE: _OWNERS,
    Action.READ_AUDIT: _AUDITORS,
    Action.DECIDE_APPROVALS: _EVERYONE - {"auditor"},
}


def permits(role: str | None, action: Action) -> bool:
    """Whether `role` may do `action` (None, or an unknown role, may do nothing)."""
    return role is not None and role in MATRIX[action]


def may_change_member(actor_role: str, current_role: str | None, new_role: str | None) -> bool:
    """Whether `actor_role` may move a member from `current_role` (None: not a member yet) to
    `new_role` (None: removed). Touching an owner, or making one, transfers ownership."""
    if not permits(actor_role, Action.MANAGE_MEMBERS):
        return False
    if "owner" in (current_role, new_role):
        return permits(actor_role, Action.TRANSFER_OWNERSHIP)
    return True
