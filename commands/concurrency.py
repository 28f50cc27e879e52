"""Concurrency gates in commands: a start of a workflow with `settings.concurrency` enters its
gate (`enter`), and the command that closes such an execution frees its slot and admits the
next in line (`after_close`), saving the gate and the admitted executions in the same
transaction as the execution's own events.

Exactly once: the gate is loaded as a copy and saved with the executions; a concurrent command
that changed the gate since makes the save conflict (IntegrityError), and the bus runs the
command again on fresh reads. An execution without `concurrency_gate` costs one attribute test.

Imported by `commands.handlers`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError

from commands.context import CommandContext
from domain.concurrency import (
    ConcurrencyGate,
    ConcurrencyKeyError,
    ConcurrencySettings,
    gate_id,
    render_key,
)
from domain.execution import EXECUTION_CLOSED, Execution
from domain.expressions import ExpressionLimits


class Entry(NamedTuple):
    """What a start decided at its gate: the gate to save (None: none entered), whether the
    execution waits, and the error it fails with at once (its key did not render)."""

    gate: ConcurrencyGate | None
    queued: bool = False
    refused: dict[str, Any] | None = None


NO_GATE = Entry(None)


def settings_of(definition: dict[str, Any]) -> ConcurrencySettings | None:
    raw = (definition.get("settings") or {}).get("concurrency")
    return ConcurrencySettings.model_validate(raw) if raw else None


def enter(
    ctx: CommandContext,
    definition: dict[str, Any],
    workspace_id: str,
    workflow_id: str,
    version: int,
    execution_id: UUID,
    input: Any,
    variables: dict[str, Any],
    now: datetime,
    gates: dict[UUID, ConcurrencyGate] | None = None,
) -> Entry:
    """A new execution enters its gate: it takes a slot or waits in line. `gates`: the gates
    this command already entered (several executions of one command, e.g. a bulk re-run, then
    share one gate instance, saved once)."""
    settings = settings_of(definition)
    if settings is None:
        return NO_GATE
    context = {
        "trigger": input,
        "nodes": {},
        "vars": variables,
        "execution": {
            "id": str(execution_id),
            "workflow_id": workflow_id,
            "version": version,
            "started_at": now.isoformat(),
        },
    }
    bounds = ExpressionLimits(
        ctx.limits.max_expression_cost, ctx.limits.max_expression_result_bytes
    )
    try:
        key = render_key(settings, context, bounds)
    except ConcurrencyKeyError as exc:
        return Entry(None, refused={"type": "concurrency_key_error", "message": str(exc)})
    gate_key = gate_id(workflow_id, key)
    gate = gates.get(gate_key) if gates is not None else None
    if gate is None:
        gate = _gate(ctx, workspace_id, workflow_id, key, now)
        if gates is not None:
            gates[gate_key] = gate
    queued = not gate.enter(str(execution_id), settings.limit, now)
    return Entry(gate, queued)


def _gate(
    ctx: CommandContext, workspace_id: str, workflow_id: str, key: str, now: datetime
) -> ConcurrencyGate:
    try:
        gate: ConcurrencyGate = ctx.load(ConcurrencyGate, gate_id(workflow_id, key))
    except AggregateNotFoundError:
        # Two first starts both open it: one save conflicts, and its retry loads this one.
        return ConcurrencyGate.open(workspace_id, workflow_id, key, now)
    return gate


def after_close(ctx: CommandContext, execution: Execution, now: datetime) -> list[Any]:
    """When this command closed a gated execution (its pending events close it): the gate with
    the slot freed (or the line left), and the executions admitted in its place, to save with
    it. [] for every other command."""
    if execution.concurrency_gate is None:
        return []
    if not any(isinstance(event, EXECUTION_CLOSED) for event in execution.pending_events):
        return []
    ctx.leave_loop()  # rare, and it may decide other executions: not on the event loop
    try:
        gate: ConcurrencyGate = ctx.load(ConcurrencyGate, UUID(execution.concurrency_gate))
    except AggregateNotFoundError:
        return []
    if not gate.leave(str(execution.id), now):
        return []
    settings = settings_of(execution.definition)
    limit = settings.limit if settings else 1
    changed: list[Any] = [gate]
    while (next_id := gate.admit_next(limit, now)) is not None:
        try:
            admitted: Execution = ctx.load(Execution, UUID(next_id))
        except AggregateNotFoundError:
            gate.leave(next_id, now)
            continue
        admitted.limits = ctx.limits
        if admitted.admit(now):
            changed.append(admitted)
        else:  # it closed without the gate knowing (cannot happen: they are saved together)
            gate.leave(next_id, now)
    return changed
