"""Reads of the write model needed for decisions, not for display: authentication (e-mail +
password), a user's workspaces, a member's role, whether a node attempt is still awaited, the
workflow a webhook token starts and how its execution ended.
Synchronous (call them through `CommandBus.run`). Visibility reads go to `projections.queries`.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError

from commands.handlers import execution_id_for
from commands.identity import parse_api_key
from domain.api_key import ApiKey
from domain.base import DomainError, TenantAggregate
from domain.credential import Credential
from domain.definition import Trigger
from domain.execution import Execution
from domain.statuses import CURRENT
from domain.user import EmailIndex, User
from domain.webhook import WebhookIndex
from domain.workflow import Workflow
from domain.workspace import Workspace
from infra.eventstore import EventStore, WrongAggregate
from infra.passwords import verify_password


def authenticate(store: EventStore, email: str, password: str) -> dict[str, Any] | None:
    """The user's identity if the password matches, else None (same answer for unknown e-mail)."""
    try:
        index = store.read_fresh(EmailIndex, EmailIndex.id_for(email))
        user = store.read_fresh(User, UUID(index.user_id))
    except AggregateNotFoundError:
        verify_password(password, _DUMMY_HASH)  # same cost whether or not the e-mail exists
        return None
    if not verify_password(password, user.password_hash):
        return None
    return {"id": str(user.id), "email": user.email, "name": user.name}


def user_profile(store: EventStore, user_id: UUID) -> dict[str, Any] | None:
    """`/me`: the user and each workspace with the user's role in it."""
    try:
        user = store.read_fresh(User, user_id)
    except AggregateNotFoundError:
        return None
    workspaces = []
    for ws_id in user.workspaces:
        workspace = store.read_fresh(Workspace, UUID(ws_id))
        role = workspace.role_of(str(user_id))
        if role:
            workspaces.append({"id": ws_id, "name": workspace.name, "role": role})
    return {
        "user": {"id": str(user.id), "email": user.email, "name": user.name},
        "workspaces": workspaces,
    }


def started_before(store: EventStore, workflow_id: UUID, idempotency_key: str) -> bool:
    """Whether a start of the workflow with this Idempotency-Key was accepted already (its
    repeat is answered even when the workspace is at its cap of open executions)."""
    try:
        store.read_fresh(Execution, execution_id_for(workflow_id, idempotency_key))
    except AggregateNotFoundError:
        return False
    return True


def attempt_is_current(store: EventStore, execution_id: UUID, node_id: str, attempt: int) -> bool:
    """Whether a node attempt still awaits its result (scheduled, or started by a worker)."""
    try:
        execution = store.read_fresh(Execution, execution_id)
    except AggregateNotFoundError:
        return False
    run = execution.nodes.get(node_id)
    return (
        execution.running and run is not None and run.status in CURRENT and run.attempts == attempt
    )


@dataclass(frozen=True)
class WebhookTarget:
    """What a webhook token starts: the workflow and the trigger of its active version."""

    workspace_id: UUID
    workflow_id: UUID
    trigger: Trigger


def webhook_target(store: EventStore, token: str) -> WebhookTarget | None:
    """The workflow `token` starts; None for an unknown token, or a workflow that is archived,
    inactive, in a deleted workspace, or whose active version has no webhook trigger (the
    gateway answers all of them alike)."""
    try:
        index = store.read_fresh(WebhookIndex, WebhookIndex.id_for(token))
        workflow = store.read_fresh(Workflow, UUID(index.workflow_id))
        version = workflow.triggered_version("webhook")
    except (AggregateNotFoundError, DomainError):
        return None
    if not workspace_exists(store, UUID(workflow.workspace_id)):
        return None
    trigger = Trigger.model_validate(workflow.definition(version)["trigger"])
    return WebhookTarget(UUID(workflow.workspace_id), workflow.id, trigger)


def execution_outcome(store: EventStore, execution_id: UUID) -> dict[str, Any]:
    """An execution's `status`, `output` and `error` as the event store has them now."""
    execution = store.read_fresh(Execution, execution_id)
    return {"status": execution.status, "output": execution.output, "error": execution.error}


@dataclass(frozen=True)
class SealedCredential:
    """A credential as stored: its data still sealed (open it with `infra.crypto.SecretBox`
    and `Credential.sealing_context(id)`, only where the secret is used)."""

    id: UUID
    name: str
    type: str
    sealed_data: str


def sealed_credential(store: EventStore, workspace_id: str, name: str) -> SealedCredential | None:
    """The workspace's credential called `name`, or None (unknown, deleted)."""
    try:
        credential = store.read_fresh(Credential, Credential.id_for(workspace_id, name))
    except AggregateNotFoundError:
        return None
    if credential.deleted or credential.workspace_id != workspace_id:
        return None
    return SealedCredential(credential.id, credential.name, credential.type, credential.sealed_data)


@dataclass(frozen=True)
class ApiKeyIdentity:
    id: UUID
    workspace_id: UUID
    role: str


def authenticate_api_key(store: EventStore, token: str) -> ApiKeyIdentity | None:
    """The key a Bearer `lfk_…` token names, if its secret matches and it is not revoked."""
    parsed = parse_api_key(token)
    if parsed is None:
        return None
    key_id, presented = parsed
    try:
        key = store.read_fresh(ApiKey, key_id)
    except AggregateNotFoundError:
        return None
    if key.revoked or not hmac.compare_digest(key.secret_hash, presented):
        return None
    if not workspace_exists(store, UUID(key.workspace_id)):
        return None
    return ApiKeyIdentity(key.id, UUID(key.workspace_id), key.role)


def workspace_members(store: EventStore, workspace_id: UUID) -> list[dict[str, Any]]:
    """Every member of the workspace with their role, ordered by e-mail."""
    workspace = store.read_fresh(Workspace, workspace_id)
    members = []
    for user_id, role in workspace.members.items():
        user = store.read_fresh(User, UUID(user_id))
        members.append({"user_id": user_id, "email": user.email, "name": user.name, "role": role})
    return sorted(members, key=lambda m: m["email"])


def member_role(store: EventStore, workspace_id: UUID, user_id: UUID) -> str | None:
    """The user's role in the workspace (None: not a member, or no such workspace)."""
    try:
        workspace = store.read_fresh(Workspace, workspace_id)
    except AggregateNotFoundError:
        return None
    return workspace.role_of(str(user_id))


@dataclass(frozen=True)
class HeldRole:
    """A member's role (None: not a member, or no such workspace) in the workspace as this
    process holds it at `version` (0: no such workspace)."""

    role: str | None
    version: int


def held_role(
    store: EventStore, workspace_id: UUID, user_id: UUID, wait: bool = True
) -> HeldRole | None:
    """`member_role` from the workspace as this process holds it (`EventStore.read_held`),
    asking PostgreSQL nothing once it is held, with the version that answer comes from: a
    command acting on the answer is run with `{workspace_id: version}` as its reads, so that its
    save checks it. None only when not `wait` and the workspace is not held (then ask again
    with `wait`, off the event loop)."""
    try:
        held = store.read_held(Workspace, workspace_id, wait=wait)
    except WrongAggregate:
        return HeldRole(None, 0)
    if held is None:
        return None
    workspace = held.aggregate
    role = workspace.role_of(str(user_id)) if workspace is not None else None
    return HeldRole(role, held.version)


def position_in_workspace(
    store: EventStore, kind: type[TenantAggregate], workspace_id: UUID, aggregate_id: UUID
) -> int:
    """The position of the aggregate's latest event if it is a `kind` of the workspace (0
    otherwise): what a read by id waits for the read models to reach rather than answer 404 for
    an object just written."""
    try:
        aggregate = store.read_fresh(kind, aggregate_id)
    except AggregateNotFoundError:  # also an id of another kind (WrongAggregate)
        return 0
    if getattr(aggregate, "workspace_id", None) != str(workspace_id):
        return 0
    return store.position_of(aggregate_id)


def workspace_exists(store: EventStore, workspace_id: UUID) -> bool:
    """Whether the workspace exists and was not deleted."""
    try:
        return not store.read_fresh(Workspace, workspace_id).deleted
    except AggregateNotFoundError:
        return False


_DUMMY_HASH = "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
