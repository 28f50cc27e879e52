"""Re-run commands: re-run one closed execution (optionally from a node, reusing the outputs
of its ancestors, on the original's workflow version or the latest), or a list of them at once.
The new execution is an `Execution` of its own whose `ExecutionStarted` names the original
(`rerun_of`, trigger `rerun`) and whose `NodeReused` events copy the reused outputs, so replay
never reads the original. Imported by `commands.registry` and `gateways.http.routes_reruns`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal
from uuid import UUID, uuid4

from eventsourcing.persistence import IntegrityError
from pydantic import Field

from commands import concurrency
from commands.context import CommandContext
from commands.handlers import ExecutionAnswer, Result, _held_variables, _owned
from commands.models import Command
from domain.base import DomainError
from domain.concurrency import ConcurrencyGate
from domain.definition import WorkflowDefinition
from domain.execution import Execution
from domain.rerun import MAX_BULK_RERUN, BulkRerun, rerun_id, rerun_plan
from domain.statuses import ExecutionStatus
from domain.workflow import Workflow


class RerunExecution(Command):
    """Re-run a closed execution. `from_node`: run that node and everything not upstream of it
    again, reusing its ancestors' outputs (default: run everything again). `version`: the
    original's workflow version or the workflow's latest. `input`: replaces the original's
    (default: the same input)."""

    workspace_id: UUID
    execution_id: UUID
    from_node: str | None = Field(default=None, min_length=1, max_length=200)
    version: Literal["original", "latest"] = "original"
    input: Any = None
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=255)


class RerunExecutions(Command):
    """Re-run each of these closed executions (those a bulk request's filter `q` matched):
    everything again, on the original's version, with the original's input."""

    workspace_id: UUID
    q: str
    execution_ids: list[UUID] = Field(max_length=MAX_BULK_RERUN)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=255)


def _now() -> datetime:
    return datetime.now(UTC)


def _rerun(
    ctx: CommandContext,
    cmd: RerunExecution,
    execution_id: UUID,
    now: datetime,
    gates: dict[UUID, ConcurrencyGate],
) -> Execution:
    """The re-run of `cmd.execution_id` (not saved; the concurrency gate it entered, if its
    definition has a limit, is in `gates`). NotFound for an execution of another workspace;
    DomainError `execution_running` (409) while the original is not closed (running or
    queued); RerunRefused for a `from_node` that cannot be re-run from."""
    original: Execution = _owned(ctx, Execution, cmd.execution_id, cmd.workspace_id, "execution")
    if original.status in (ExecutionStatus.RUNNING, ExecutionStatus.QUEUED):
        raise DomainError("the execution is still running", "execution_running")
    workflow_id = UUID(original.workflow_id)
    workflow = _owned(ctx, Workflow, workflow_id, cmd.workspace_id, "workflow", True)
    if workflow.archived:
        raise DomainError("workflow is archived", "archived")
    if cmd.version == "latest":
        version = workflow.latest_version
        definition = workflow.definition(version)
    else:
        version, definition = original.workflow_version, original.definition
    graph = WorkflowDefinition.model_validate(definition)
    original_runs = {node_id: (run.status, run.output) for node_id, run in original.nodes.items()}
    plan = rerun_plan(graph, cmd.from_node, original_runs)
    input = cmd.input if "input" in cmd.model_fields_set else original.input
    variables = _held_variables(ctx, cmd.workspace_id)
    entry = concurrency.enter(
        ctx,
        definition,
        str(cmd.workspace_id),
        original.workflow_id,
        version,
        execution_id,
        input,
        variables,
        now,
        gates,
    )
    return Execution.start(
        execution_id,
        str(cmd.workspace_id),
        original.workflow_id,
        version,
        definition,
        input,
        now,
        trigger="rerun",
        callback_url=original.callback_url,
        vars=variables,
        limits=ctx.limits,
        search_attributes=original.search_attributes or None,
        started_by=ctx.origin.actor,
        rerun_of=str(original.id),
        rerun=plan,
        concurrency_gate=entry.gate.id if entry.gate else None,
        queued=entry.queued,
        refused=entry.refused,
        priority=original.priority,
    )


def rerun_execution(ctx: CommandContext, cmd: RerunExecution) -> ExecutionAnswer:
    execution_id = uuid4()
    if cmd.idempotency_key:
        execution_id = rerun_id(cmd.execution_id, cmd.idempotency_key)
        if ctx.exists(execution_id):
            return _repeated(ctx, cmd.workspace_id, execution_id)
    gates: dict[UUID, ConcurrencyGate] = {}
    execution = _rerun(ctx, cmd, execution_id, _now(), gates)
    try:
        position = ctx.save(execution, *gates.values())
    except IntegrityError:
        if not cmd.idempotency_key or gates:
            raise  # (a gate's conflict: the bus decides again on fresh reads)
        return _repeated(ctx, cmd.workspace_id, execution_id)
    return ExecutionAnswer(position, execution_id=execution_id, status=execution.status)


def _repeated(ctx: CommandContext, workspace_id: UUID, execution_id: UUID) -> ExecutionAnswer:
    existing = _owned(ctx, Execution, execution_id, workspace_id, "execution")
    return ExecutionAnswer(
        ctx.position_of(execution_id),
        execution_id=execution_id,
        status=existing.status,
        repeated=True,
    )


def rerun_executions(ctx: CommandContext, cmd: RerunExecutions) -> Result:
    """Re-run each execution, all saved in one transaction (with the `BulkRerun` record when
    the request has an Idempotency-Key: a repeat answers what the first request started).
    Answers `{count, execution_ids, skipped}`: the re-runs, in the order of
    `cmd.execution_ids`, and the executions not re-run because their workflow is archived."""
    bulk_id = None
    if cmd.idempotency_key:
        bulk_id = BulkRerun.id_for(str(cmd.workspace_id), cmd.idempotency_key)
        if ctx.exists(bulk_id):
            return _repeated_bulk(ctx, cmd.workspace_id, bulk_id)
    now = _now()
    reruns: list[Execution] = []
    skipped: list[dict[str, str]] = []
    gates: dict[UUID, ConcurrencyGate] = {}
    for original in cmd.execution_ids:
        one = RerunExecution(workspace_id=cmd.workspace_id, execution_id=original)
        try:
            reruns.append(_rerun(ctx, one, uuid4(), now, gates))
        except DomainError as exc:  # its workflow archived since: the others are re-run
            skipped.append({"execution_id": str(original), "reason": exc.code})
    ids = [str(e.id) for e in reruns]
    aggregates: list[Any] = [*reruns, *gates.values()]
    if cmd.idempotency_key:
        originals = [str(original) for original in cmd.execution_ids]
        bulk = BulkRerun.request(
            str(cmd.workspace_id), cmd.idempotency_key, cmd.q, originals, ids, skipped, now
        )
        aggregates.append(bulk)
    fields = {"count": len(ids), "execution_ids": ids, "skipped": skipped}
    if not aggregates:
        return Result(0, fields)
    try:
        position = ctx.save(*aggregates)
    except IntegrityError:
        if bulk_id is None or (gates and not ctx.exists(bulk_id)):
            raise  # (a gate's conflict: the bus decides again on fresh reads)
        return _repeated_bulk(ctx, cmd.workspace_id, bulk_id)
    return Result(position, fields)


def _repeated_bulk(ctx: CommandContext, workspace_id: UUID, bulk_id: UUID) -> Result:
    bulk: BulkRerun = _owned(ctx, BulkRerun, bulk_id, workspace_id, "bulk re-run")
    fields = {
        "count": len(bulk.reruns),
        "execution_ids": bulk.reruns,
        "skipped": bulk.skipped,
        "repeated": True,
    }
    return Result(ctx.position_of(bulk_id), fields)


HANDLERS: dict[type[Command], Callable[[CommandContext, Any], Result]] = {
    RerunExecution: rerun_execution,
    RerunExecutions: rerun_executions,
}
