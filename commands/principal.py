"""Who runs a command from outside, and what their role lets them do in a workspace.

A `Principal` is a user (an access token) or an API key bound to one workspace with one role;
`authorise` is the one decision the command layer makes with a role (`domain.roles.permits`,
the permission matrix). Imported by `commands.bus` and the gateways.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from commands.handlers import NotFound
from commands.identity import Forbidden
from domain.roles import Action, permits


@dataclass(frozen=True)
class Principal:
    """The caller: a user, or an API key bound to one workspace with one role."""

    id: UUID  # the user id, or the API key id
    kind: str = "user"  # "user" | "api_key"
    workspace_id: UUID | None = None  # API keys only
    role: str | None = None  # API keys only

    @property
    def is_user(self) -> bool:
        return self.kind == "user"

    def key_role(self, workspace_id: UUID) -> str | None:
        """An API key's role: only in the workspace it belongs to."""
        return self.role if self.workspace_id == workspace_id else None


def authorise(role: str | None, action: Action) -> str:
    """The role, if it may do `action`: NotFound("workspace") when there is none (the
    workspace is not the caller's: its existence is not revealed), Forbidden when the role
    does not permit it."""
    if role is None:
        raise NotFound("workspace")
    if not permits(role, action):
        raise Forbidden(f"the role {role!r} may not do this ({action.value})")
    return role
