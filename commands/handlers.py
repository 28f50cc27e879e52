"""Command handlers: read aggregate(s) through the run's `CommandContext`, call the domain,
save in one transaction. The only code that appends events. Synchronous (the event store is);
`commands.bus` runs them (in threads, or on the event loop when all they read is held) and
retries optimistic-concurrency conflicts.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid4, uuid5

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from commands import concurrency
from commands import models as m
from commands.context import CommandContext
from domain.base import DomainError, TenantAggregate
from domain.definition import DefinitionInvalid, Problem, parse_definition
from domain.execution import Execution
from domain.user import EmailIndex, User
from domain.variables import WorkspaceVariables
from domain.webhook import WebhookIndex, hook_of
from domain.workflow import Workflow
from domain.workspace import Workspace
from infra.eventstore import EventStore
from infra.logging import get_logger, log_event
from infra.passwords import hash_password

log = get_logger(__name__)
_IDEMPOTENCY_NAMESPACE = uuid5(NAMESPACE_URL, "https://linkflow.dev/idempotency")
# Executions with more nodes are decided in a command thread, never on the event loop: a
# decision costs ~50 µs per node it reaches, and the loop must not be held for long.
LOOP_NODES = 40


class NotFound(Exception):
    """Unknown id, or an id of another workspace (indistinguishable to the caller)."""

    def __init__(self, kind: str) -> None:
        super().__init__(f"{kind} not found")
        self.kind = kind


@dataclass
class Result:
    """What a command answers: its fields plus the position of its last event (0 if none)."""

    position: int
    fields: dict[str, Any] = field(default_factory=dict)
    # The domain events the command saved (set by the bus; for `CommandBus.after_save`).
    saved: list[Any] = field(default_factory=list, repr=False)


@dataclass(kw_only=True)
class ExecutionAnswer(Result):
    """A start's or a cancel's answer: the execution and its status then."""

    execution_id: UUID
    status: str
    repeated: bool = False  # a start answered by an earlier one with the same Idempotency-Key


@dataclass(kw_only=True)
class Decision(Result):
    """A node result's, a node start's or a timer's answer: whether the execution took it
    (False: a stale or repeated one, nothing recorded), and its status then."""

    accepted: bool
    status: str


def now() -> datetime:
    return datetime.now(UTC)


def _load(
    ctx: CommandContext,
    cls: type[TenantAggregate],
    aggregate_id: UUID,
    kind: str,
    checked: bool = False,
) -> Any:
    """A copy to change and save (`CommandContext.load`), or (`checked`) the held instance,
    only read, whose version the command's save checks (`CommandContext.read`). NotFound also
    for an id of another kind (`WrongAggregate` is an AggregateNotFoundError)."""
    try:
        if checked:
            return ctx.read(cls, aggregate_id)
        return ctx.load(cls, aggregate_id)
    except AggregateNotFoundError:
        raise NotFound(kind) from None


def _owned(
    ctx: CommandContext,
    cls: type[TenantAggregate],
    aggregate_id: UUID,
    workspace_id: UUID,
    kind: str,
    checked: bool = False,
) -> Any:
    aggregate = _load(ctx, cls, aggregate_id, kind, checked)
    if aggregate.workspace_id != str(workspace_id):
        raise NotFound(kind)
    return aggregate


# ---------------------------------------------------------------- identity


def register_user(ctx: CommandContext, cmd: m.RegisterUser) -> Result:
    user_id, workspace_id = uuid4(), uuid4()
    at = now()
    user = User.register(
        user_id, cmd.email, cmd.name, hash_password(cmd.password), str(workspace_id), at
    )
    index = EmailIndex.create(cmd.email, user_id, str(workspace_id), at)
    workspace = Workspace.create(workspace_id, f"{cmd.name}'s workspace", str(user_id), at)
    try:
        position = ctx.save(index, user, workspace)
    except IntegrityError:
        raise DomainError("a user with this email already exists", "email_taken") from None
    return Result(
        position,
        {
            "user": {"id": str(user_id), "email": user.email, "name": user.name},
            "workspace": {"id": str(workspace_id), "name": workspace.name},
        },
    )


def create_workspace(ctx: CommandContext, cmd: m.CreateWorkspace) -> Result:
    user = _load(ctx, User, cmd.actor_id, "user")
    at = now()
    workspace = Workspace.create(uuid4(), cmd.name, str(cmd.actor_id), at)
    user.join(str(workspace.id), at)
    position = ctx.save(workspace, user)
    return Result(position, {"id": str(workspace.id), "name": workspace.name, "role": "owner"})


# ---------------------------------------------------------------- workflows


def _workflow_fields(workflow: Workflow) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "id": str(workflow.id),
        "name": workflow.name,
        "version": workflow.latest_version,
        "active": workflow.active,
        "active_version": workflow.active_version,
        "archived": workflow.archived,
    }
    trigger = workflow.definition().get("trigger", {}).get("type")
    hook = hook_of(workflow.webhook_token, trigger)
    if hook:
        fields["webhook"] = hook
    return fields


def _check_error_workflow(ctx: CommandContext, workspace_id: UUID, definition: Any) -> None:
    """`settings.error_workflow_id` names a workflow of the workspace that is not archived
    (else 422 `invalid_definition` naming it)."""
    target = (definition.get("settings") or {}).get("error_workflow_id")
    if target is None:
        return
    path = "settings.error_workflow_id"
    try:
        workflow = _owned(ctx, Workflow, UUID(target), workspace_id, "workflow")
    except NotFound:
        raise DefinitionInvalid(
            [Problem(path, "no workflow with this id in the workspace")]
        ) from None
    if workflow.archived:
        raise DefinitionInvalid([Problem(path, "the error workflow is archived")])


def create_workflow(ctx: CommandContext, cmd: m.CreateWorkflow) -> Result:
    """Every workflow gets an unguessable webhook token (used once its trigger is a webhook)."""
    definition = parse_definition(cmd.definition, ctx.limits.max_nodes).to_json()
    _check_error_workflow(ctx, cmd.workspace_id, definition)
    token, at = secrets.token_urlsafe(24), now()
    workflow = Workflow.create(
        uuid4(), str(cmd.workspace_id), definition, str(cmd.actor_id), at, webhook_token=token
    )
    index = WebhookIndex.create(token, workflow.id, str(cmd.workspace_id), at)
    position = ctx.save(workflow, index)
    return Result(position, _workflow_fields(workflow) | {"definition": definition})


def update_workflow(ctx: CommandContext, cmd: m.UpdateWorkflow) -> Result:
    definition = parse_definition(cmd.definition, ctx.limits.max_nodes).to_json()
    _check_error_workflow(ctx, cmd.workspace_id, definition)
    workflow = _owned(ctx, Workflow, cmd.workflow_id, cmd.workspace_id, "workflow")
    workflow.publish_version(definition, now())
    position = ctx.save(workflow)
    return Result(position, _workflow_fields(workflow) | {"definition": definition})


def activate_workflow(ctx: CommandContext, cmd: m.ActivateWorkflow) -> Result:
    workflow = _owned(ctx, Workflow, cmd.workflow_id, cmd.workspace_id, "workflow")
    workflow.activate(cmd.version, now())
    return Result(ctx.save(workflow), _workflow_fields(workflow))


def deactivate_workflow(ctx: CommandContext, cmd: m.DeactivateWorkflow) -> Result:
    workflow = _owned(ctx, Workflow, cmd.workflow_id, cmd.workspace_id, "workflow")
    workflow.deactivate(now())
    return Result(ctx.save(workflow), _workflow_fields(workflow))


def archive_workflow(ctx: CommandContext, cmd: m.ArchiveWorkflow) -> Result:
    workflow = _owned(ctx, Workflow, cmd.workflow_id, cmd.workspace_id, "workflow")
    workflow.archive(now())
    return Result(ctx.save(workflow), _workflow_fields(workflow))


# ---------------------------------------------------------------- executions


def execution_id_for(workflow_id: UUID, idempotency_key: str) -> UUID:
    """The same key on the same workflow always names the same execution."""
    return uuid5(_IDEMPOTENCY_NAMESPACE, f"{workflow_id}:{idempotency_key}")


def start_execution(ctx: CommandContext, cmd: m.StartExecution) -> ExecutionAnswer:
    # The workflow and the variables are read as this process holds them, asking PostgreSQL
    # nothing; the save checks that neither changed since (else the bus runs this again).
    workflow = _owned(ctx, Workflow, cmd.workflow_id, cmd.workspace_id, "workflow", True)
    execution_id = uuid4()
    if cmd.idempotency_key:
        execution_id = execution_id_for(cmd.workflow_id, cmd.idempotency_key)
        if ctx.exists(execution_id):  # a repeat is answered whatever became of the workflow
            return _repeated_start(ctx, cmd, execution_id)
    if workflow.archived:
        raise DomainError("workflow is archived", "archived")
    if cmd.trigger in ("manual", "error_workflow"):
        version = cmd.version or workflow.latest_version
    else:
        version = workflow.triggered_version(cmd.trigger)
    definition = workflow.definition(version)
    if len(definition["nodes"]) > LOOP_NODES:
        ctx.leave_loop()
    at, variables = now(), _held_variables(ctx, cmd.workspace_id)
    entry = concurrency.NO_GATE
    if (definition.get("settings") or {}).get("concurrency"):
        entry = concurrency.enter(
            ctx,
            definition,
            str(cmd.workspace_id),
            str(cmd.workflow_id),
            version,
            execution_id,
            cmd.input,
            variables,
            at,
        )
    execution = Execution.start(
        execution_id,
        str(cmd.workspace_id),
        str(cmd.workflow_id),
        version,
        definition,
        cmd.input,
        at,
        trigger=cmd.trigger,
        callback_url=cmd.callback_url or (definition.get("settings") or {}).get("callback_url"),
        idempotency_key=cmd.idempotency_key,
        vars=variables,
        limits=ctx.limits,
        search_attributes=cmd.search_attributes,
        started_by=ctx.origin.actor,
        concurrency_gate=entry.gate.id if entry.gate else None,
        queued=entry.queued,
        refused=entry.refused,
        priority=cmd.priority,
    )
    try:
        position = ctx.save(execution, entry.gate) if entry.gate else ctx.save(execution)
    except IntegrityError:
        if not cmd.idempotency_key or (entry.gate and not ctx.exists(execution_id)):
            raise  # (a gate's conflict: the bus decides again on fresh reads)
        return _repeated_start(ctx, cmd, execution_id)
    for name, problem in execution.search_attribute_problems:
        log_event(
            log,
            "search attribute not set",
            logging.WARNING,
            execution_id=str(execution_id),
            workflow_id=str(cmd.workflow_id),
            attribute=name,
            problem=problem,
        )
    return ExecutionAnswer(position, execution_id=execution_id, status=execution.status)


def workspace_variables(store: EventStore, workspace_id: UUID) -> dict[str, Any]:
    """The workspace's variables (`{}` when it never set one), current (a lookup: call it
    through `CommandBus.run`)."""
    try:
        variables = store.read_fresh(
            WorkspaceVariables, WorkspaceVariables.id_for(str(workspace_id))
        )
    except AggregateNotFoundError:
        return {}
    return dict(variables.values)


def _held_variables(ctx: CommandContext, workspace_id: UUID) -> dict[str, Any]:
    """`workspace_variables` by a checked read (for a start)."""
    try:
        variables = ctx.read(WorkspaceVariables, WorkspaceVariables.id_for(str(workspace_id)))
    except AggregateNotFoundError:
        return {}
    return dict(variables.values)


def _repeated_start(
    ctx: CommandContext, cmd: m.StartExecution, execution_id: UUID
) -> ExecutionAnswer:
    existing = _owned(ctx, Execution, execution_id, cmd.workspace_id, "execution")
    if existing.input != cmd.input:
        raise DomainError(
            "this Idempotency-Key was used with a different input", "idempotency_key_reused"
        )
    return ExecutionAnswer(
        ctx.position_of(execution_id),
        execution_id=execution_id,
        status=existing.status,
        repeated=True,
    )


def cancel_execution(ctx: CommandContext, cmd: m.CancelExecution) -> ExecutionAnswer:
    execution = _owned(ctx, Execution, cmd.execution_id, cmd.workspace_id, "execution")
    at = now()
    execution.cancel(cmd.reason, at)
    position = 0
    if execution.pending_events:
        position = ctx.save(execution, *concurrency.after_close(ctx, execution, at))
    return ExecutionAnswer(position, execution_id=execution.id, status=execution.status)


def _execution(ctx: CommandContext, execution_id: UUID) -> Execution:
    """The execution a worker's result or a timer is for (a copy to change)."""
    execution: Execution = _load(ctx, Execution, execution_id, "execution")
    if len(execution.nodes) > LOOP_NODES:
        ctx.leave_loop()
    execution.limits = ctx.limits
    return execution


def complete_node(ctx: CommandContext, cmd: m.CompleteNode) -> Decision:
    execution = _execution(ctx, cmd.execution_id)
    accepted = execution.complete_node(cmd.node_id, cmd.attempt, cmd.output, now())
    return _save_if_changed(ctx, execution, accepted)


def start_node(ctx: CommandContext, cmd: m.StartNode) -> Decision:
    execution = _execution(ctx, cmd.execution_id)
    accepted = execution.start_node(cmd.node_id, cmd.attempt, now())
    return _save_if_changed(ctx, execution, accepted)


def time_out_node(ctx: CommandContext, cmd: m.TimeOutNode) -> Decision:
    execution = _execution(ctx, cmd.execution_id)
    accepted = execution.time_out_node(cmd.node_id, cmd.attempt, now())
    return _save_if_changed(ctx, execution, accepted)


def fail_node(ctx: CommandContext, cmd: m.FailNode) -> Decision:
    execution = _execution(ctx, cmd.execution_id)
    accepted = execution.fail_node(cmd.node_id, cmd.attempt, cmd.error, now(), cmd.retryable)
    return _save_if_changed(ctx, execution, accepted)


def fire_timer(ctx: CommandContext, cmd: m.FireTimer) -> Decision:
    execution = _execution(ctx, cmd.execution_id)
    accepted = execution.fire_timer(cmd.timer_id, now())
    return _save_if_changed(ctx, execution, accepted)


def _save_if_changed(ctx: CommandContext, execution: Execution, accepted: bool) -> Decision:
    """Save what the command recorded; if it closed a gated execution, the gate's release and
    the admitted executions with it (commands.concurrency)."""
    position = 0
    if accepted:
        position = ctx.save(execution, *concurrency.after_close(ctx, execution, now()))
    return Decision(position, accepted=accepted, status=execution.status)


HANDLERS: dict[type[m.Command], Callable[[CommandContext, Any], Result]] = {
    m.RegisterUser: register_user,
    m.CreateWorkspace: create_workspace,
    m.CreateWorkflow: create_workflow,
    m.UpdateWorkflow: update_workflow,
    m.ActivateWorkflow: activate_workflow,
    m.DeactivateWorkflow: deactivate_workflow,
    m.ArchiveWorkflow: archive_workflow,
    m.StartExecution: start_execution,
    m.CancelExecution: cancel_execution,
    m.StartNode: start_node,
    m.TimeOutNode: time_out_node,
    m.CompleteNode: complete_node,
    m.FailNode: fail_node,
    m.FireTimer: fire_timer,
}
