"""The Execution aggregate: one run of one workflow version, and every decision on what runs next.

All decisions are pure and deterministic: the caller passes the time (`now`) and the aggregate
derives everything else from its events. Side-effect-free nodes (`condition`, `transform`) are
decided inline, in the same command that reaches them (like workflow code in Temporal); nodes with
side effects (`http_request`) are dispatched to workers; `delay` nodes and retry back-off wait on
durable timers; `wait_for_signal` and `approval` nodes wait (status running) for a signal or a
decision sent to the execution (domain.waits). Imported by `commands/` (which saves it) and by
consumers reading its events.
"""

from __future__ import annotations

import copy
import heapq
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate

from domain.base import DomainError, TenantAggregate
from domain.definition import WORKER_NODE_TYPES, Node, WorkflowDefinition
from domain.expressions import ExpressionError, ExpressionLimits, render, render_task
from domain.json_limits import footprint, json_size
from domain.limits import DEFAULT_LIMITS, Limits
from domain.node_logic import apply_transform, evaluate_condition
from domain.rerun import RerunPlan
from domain.search_attributes import derive
from domain.statuses import (
    CURRENT,
    IN_FLIGHT,
    NODE_TERMINAL,
    CallbackStatus,
    ExecutionStatus,
    NodeStatus,
    NodeTimeout,
    TimerKind,
)
from domain.waits import (
    APPROVAL,
    MAX_KEPT_SIGNALS,
    TIMEOUT_BRANCH,
    WAIT_FOR_SIGNAL,
    WAIT_TYPES,
    ApprovalConfig,
    approval_output,
    check_payload,
    check_signal_name,
    signal_output,
    signal_url_map,
    timeout_output,
)

DISPATCHED_TYPES = WORKER_NODE_TYPES
DEFAULT_PRIORITY = 3  # of tasks whose execution names none (1 first, 5 last)


@dataclass
class NodeRun:
    """What the execution knows about one node of its definition."""

    status: NodeStatus = NodeStatus.PENDING
    attempts: int = 0
    started_at: datetime | None = None
    closed_at: datetime | None = None
    output: Any = None
    error: dict[str, Any] | None = None
    failed_for_good: bool = field(default=False)
    reused: bool = False  # a re-run's output kept from the original (NodeReused)


def timer_id(execution_id: UUID, kind: TimerKind, node_id: str = "", attempt: int = 0) -> str:
    """Deterministic timer ids make scheduling and firing idempotent."""
    return f"{execution_id}:{kind}:{node_id}:{attempt}"


class Execution(TenantAggregate):
    class ExecutionStarted(Aggregate.Created):
        workspace_id: str
        workflow_id: str
        workflow_version: int
        definition: dict[str, Any]
        input: Any
        trigger: str
        callback_url: str | None
        idempotency_key: str | None
        vars: dict[str, Any]  # the workspace's variables at the start (replay never re-reads)
        # Given at the start or derived from settings.search_attributes (absent before them).
        search_attributes: dict[str, Any]
        # Who started it (the request's actor; absent before approvals: None), for approvals'
        # self-approval rule.
        started_by: dict[str, Any] | None
        rerun_of: str | None  # the execution this one re-runs (absent before re-runs)
        # Absent before concurrency and priority (domain.concurrency): the gate whose slot it
        # takes, and the priority of its tasks (None: 3).
        concurrency_gate: str | None = None
        priority: int | None = None

    class ExecutionQueued(Aggregate.Event):
        """Its workflow's concurrency limit was reached: it waits for a slot of its gate."""

        workspace_id: str

        def apply(self, aggregate: Execution) -> None:
            aggregate.status = ExecutionStatus.QUEUED

    class ExecutionAdmitted(Aggregate.Event):
        """A slot of its gate freed up and it was next in line: it runs from now on."""

        workspace_id: str

        def apply(self, aggregate: Execution) -> None:
            aggregate.status = ExecutionStatus.RUNNING

    class NodeScheduled(Aggregate.Event):
        """A node's attempt begins. `task` is what a worker needs (None for inline/timer nodes)."""

        workspace_id: str
        node_id: str
        node_type: str
        attempt: int
        queue: str
        task: dict[str, Any] | None

        def apply(self, aggregate: Execution) -> None:
            run = aggregate.nodes[self.node_id]
            run.status = NodeStatus.SCHEDULED
            run.attempts = self.attempt
            run.started_at = run.started_at or self.timestamp
            run.error = None

    class NodeReused(Aggregate.Event):
        """A re-run keeps the output its original recorded for this node (an ancestor of the
        node it re-runs from): the output is copied here, never read from the original."""

        workspace_id: str
        node_id: str
        node_type: str
        output: Any

        def apply(self, aggregate: Execution) -> None:
            run = aggregate.nodes[self.node_id]
            run.output = self.output
            run.reused = True
            aggregate.outputs[self.node_id] = {"output": self.output}
            aggregate.footprint += footprint(self.output)
            aggregate.settle(self.node_id, NodeStatus.COMPLETED, self.timestamp)

    class NodeStarted(Aggregate.Event):
        """A worker started the attempt (recorded for nodes with `schedule_to_start_s`)."""

        workspace_id: str
        node_id: str
        attempt: int

        def apply(self, aggregate: Execution) -> None:
            aggregate.nodes[self.node_id].status = NodeStatus.RUNNING

    class NodeCompleted(Aggregate.Event):
        workspace_id: str
        node_id: str
        attempt: int
        output: Any

        def apply(self, aggregate: Execution) -> None:
            run = aggregate.nodes[self.node_id]
            run.output = self.output
            aggregate.take_signal(self.node_id, self.output)
            aggregate.outputs[self.node_id] = {"output": self.output}
            aggregate.footprint += footprint(self.output)
            aggregate.settle(self.node_id, NodeStatus.COMPLETED, self.timestamp)

    class NodeFailed(Aggregate.Event):
        """An attempt failed; `will_retry` says whether a back-off timer follows."""

        workspace_id: str
        node_id: str
        attempt: int
        error: dict[str, Any]
        will_retry: bool

        def apply(self, aggregate: Execution) -> None:
            run = aggregate.nodes[self.node_id]
            run.error = self.error
            if self.will_retry:
                run.status = NodeStatus.RETRYING
            else:
                run.failed_for_good = True
                aggregate.settle(self.node_id, NodeStatus.FAILED, self.timestamp)

    class NodeTimedOut(Aggregate.Event):
        """An attempt ran out of time: `timeout` (a `NodeTimeout`) is START_TO_CLOSE (it ran
        longer than the node's `timeout_s` once started) or SCHEDULE_TO_START (no worker started
        it within `schedule_to_start_s`; never retried: another attempt would wait in the same
        queue)."""

        workspace_id: str
        node_id: str
        attempt: int
        will_retry: bool
        timeout: str = NodeTimeout.START_TO_CLOSE  # events recorded before there were two kinds

        @property
        def error(self) -> dict[str, Any]:
            if self.timeout == NodeTimeout.SCHEDULE_TO_START:
                message = f"attempt {self.attempt} was not started in time"
                return {"type": "schedule_to_start_timeout", "message": message}
            return {"type": "timeout", "message": f"attempt {self.attempt} timed out"}

        def apply(self, aggregate: Execution) -> None:
            run = aggregate.nodes[self.node_id]
            run.error = self.error
            if self.will_retry:
                run.status = NodeStatus.RETRYING
            else:
                run.failed_for_good = True
                aggregate.settle(self.node_id, NodeStatus.TIMED_OUT, self.timestamp)

    class NodeSkipped(Aggregate.Event):
        workspace_id: str
        node_id: str
        node_type: str

        def apply(self, aggregate: Execution) -> None:
            aggregate.settle(self.node_id, NodeStatus.SKIPPED, self.timestamp)

    class NodeCanceled(Aggregate.Event):
        workspace_id: str
        node_id: str
        attempt: int

        def apply(self, aggregate: Execution) -> None:
            aggregate.settle(self.node_id, NodeStatus.CANCELED, self.timestamp)

    class SignalReceived(Aggregate.Event):
        """A signal sent to the execution: kept until a `wait_for_signal` node for `name`
        takes it (domain.waits); `idempotency_key` makes a repeat a no-op."""

        workspace_id: str
        name: str
        payload: Any
        actor: dict[str, Any]
        idempotency_key: str | None

        def apply(self, aggregate: Execution) -> None:
            signal = {
                "name": self.name,
                "payload": self.payload,
                "actor": self.actor,
                "received_at": self.timestamp.isoformat(),
            }
            aggregate.inbox.setdefault(self.name, []).append(signal)
            if self.idempotency_key is not None:
                aggregate.signal_keys.add(self.idempotency_key)
            aggregate.footprint += footprint(self.payload)

    class ApprovalDecided(Aggregate.Event):
        """An approver's decision on a waiting `approval` node (its NodeCompleted follows)."""

        workspace_id: str
        node_id: str
        attempt: int
        decision: str
        comment: str | None
        actor: dict[str, Any]

    class TimerScheduled(Aggregate.Event):
        workspace_id: str
        timer_id: str
        kind: str
        fire_at: datetime
        node_id: str | None
        attempt: int | None

        def apply(self, aggregate: Execution) -> None:
            aggregate.timers[self.timer_id] = {
                "kind": self.kind,
                "node_id": self.node_id,
                "attempt": self.attempt,
            }

    class TimerFired(Aggregate.Event):
        workspace_id: str
        timer_id: str

        def apply(self, aggregate: Execution) -> None:
            aggregate.timers.pop(self.timer_id, None)

    class ExecutionCompleted(Aggregate.Event):
        workspace_id: str
        output: Any

        def apply(self, aggregate: Execution) -> None:
            aggregate.close(ExecutionStatus.COMPLETED, self.timestamp)
            aggregate.output = self.output

    class ExecutionFailed(Aggregate.Event):
        workspace_id: str
        error: dict[str, Any]

        def apply(self, aggregate: Execution) -> None:
            aggregate.close(ExecutionStatus.FAILED, self.timestamp)
            aggregate.error = self.error

    class ExecutionCanceled(Aggregate.Event):
        workspace_id: str
        reason: str

        @property
        def error(self) -> dict[str, Any]:
            """The execution's error, as the API, the read model and the callback show it."""
            return {"type": "canceled", "message": self.reason}

        def apply(self, aggregate: Execution) -> None:
            aggregate.close(ExecutionStatus.CANCELED, self.timestamp)
            aggregate.error = self.error

    class ExecutionTimedOut(Aggregate.Event):
        workspace_id: str

        @property
        def error(self) -> dict[str, Any]:
            """The execution's error, as the API, the read model and the callback show it."""
            return {"type": "timeout", "message": "execution timed out"}

        def apply(self, aggregate: Execution) -> None:
            aggregate.close(ExecutionStatus.TIMED_OUT, self.timestamp)
            aggregate.error = self.error

    class CallbackDelivered(Aggregate.Event):
        """The callback URL acknowledged the final result (a 2xx answer) at this attempt."""

        workspace_id: str
        attempt: int
        status_code: int

        def apply(self, aggregate: Execution) -> None:
            aggregate.callback_attempts = self.attempt
            aggregate.callback_status = CallbackStatus.DELIVERED
            aggregate.callback_next_attempt_at = None

    class CallbackFailed(Aggregate.Event):
        """An attempt was not acknowledged (`status_code` of the answer, or the `error` when there
        was none); `next_attempt_at` is None when no attempt follows."""

        workspace_id: str
        attempt: int
        status_code: int | None
        error: str | None
        next_attempt_at: datetime | None

        def apply(self, aggregate: Execution) -> None:
            aggregate.callback_attempts = self.attempt
            aggregate.callback_next_attempt_at = self.next_attempt_at

    class CallbackAbandoned(Aggregate.Event):
        """Delivery of the final result was given up after `attempts` attempts."""

        workspace_id: str
        attempts: int

        def apply(self, aggregate: Execution) -> None:
            aggregate.callback_status = CallbackStatus.ABANDONED

    # What a command may make this execution compute and hold (not state: the handler sets the
    # process's limits on the copy it changes; see `commands.limits`).
    limits: Limits = DEFAULT_LIMITS
    # The settings.search_attributes the start could not derive, (name, why) (not state: only
    # the start's handler reads it, to log them).
    search_attribute_problems: tuple[tuple[str, str], ...] = ()

    # Delivery of the final result to `callback_url` (set by the Callback* events): PENDING
    # until delivered or abandoned.
    callback_status = CallbackStatus.PENDING
    callback_attempts = 0
    callback_next_attempt_at: datetime | None = None

    def __init__(
        self,
        workspace_id: str,
        workflow_id: str,
        workflow_version: int,
        definition: dict[str, Any],
        input: Any,
        trigger: str,
        callback_url: str | None,
        idempotency_key: str | None,
        vars: dict[str, Any] | None = None,  # None: started before variables existed
        search_attributes: dict[str, Any] | None = None,  # None: started before them
        started_by: dict[str, Any] | None = None,  # None: started before approvals
        rerun_of: str | None = None,
        concurrency_gate: str | None = None,
        priority: int | None = None,
    ) -> None:
        self.workspace_id = workspace_id
        self.workflow_id = workflow_id
        self.workflow_version = workflow_version
        self.definition = definition
        self.input = input
        self.trigger = trigger
        self.callback_url = callback_url
        self.idempotency_key = idempotency_key
        self.vars = dict(vars or {})
        self.search_attributes = dict(search_attributes or {})
        self.started_by = started_by
        # Signals no node has taken yet, by name, oldest first; the Idempotency-Keys seen.
        self.inbox: dict[str, list[dict[str, Any]]] = {}
        self.signal_keys: set[str] = set()
        self.rerun_of = rerun_of
        self.concurrency_gate = concurrency_gate
        self.priority = priority
        self.status = ExecutionStatus.RUNNING
        self.output: Any = None
        self.error: dict[str, Any] | None = None
        self.closed_at: datetime | None = None
        self.graph = WorkflowDefinition.model_validate(definition)
        self.nodes: dict[str, NodeRun] = {node.id: NodeRun() for node in self.graph.nodes}
        self.timers: dict[str, dict[str, Any]] = {}
        # Kept as events apply, so that each decision costs what it touches, not the graph:
        # the outputs expressions see, how many nodes are not settled yet, and the nodes
        # settled since the last `_advance` (whose children it looks at).
        self.outputs: dict[str, dict[str, Any]] = {}
        self.unsettled = len(self.nodes)
        self.newly_settled: list[str] = []
        # About how many bytes it holds (the aggregate cache's byte budget counts it): what
        # came with the start, and the outputs since.
        self.footprint = footprint(definition) + footprint(input) + footprint(self.vars)

    def __deepcopy__(self, memo: dict[int, Any]) -> Execution:
        """The copy a command changes (the event store copies a cached aggregate for each
        command): the node runs, the timers and the pending events are copied; what never
        changes after the start (definition, graph, input, vars) and the values node runs and
        timers hold (always replaced, never changed in place) are shared. Copying the whole
        definition on every command was 9-12 % of a worker's CPU."""
        clone = object.__new__(type(self))
        pending = self.pending_events  # the library's list, copied rather than shared
        clone.__dict__.update(
            {name: list(value) if value is pending else value for name, value in vars(self).items()}
        )
        clone.nodes = {node_id: copy.copy(run) for node_id, run in self.nodes.items()}
        clone.timers = dict(self.timers)
        clone.inbox = {name: list(signals) for name, signals in self.inbox.items()}
        clone.signal_keys = set(self.signal_keys)
        clone.outputs = dict(self.outputs)
        clone.newly_settled = list(self.newly_settled)
        memo[id(self)] = clone
        return clone

    def close(self, status: ExecutionStatus, at: datetime) -> None:
        self.status = status
        self.closed_at = at

    def take_signal(self, node_id: str, output: Any) -> None:
        """A `wait_for_signal` node completed with a received signal: the oldest one kept
        under its name is the one it took (see `receive_signal` and `_begin_wait`)."""
        if isinstance(output, dict) and output.get("branch") == "received":
            if self.graph.node(node_id).type == WAIT_FOR_SIGNAL:
                signals = self.inbox.get(output.get("signal", ""))
                if signals:
                    signals.pop(0)

    def settle(self, node_id: str, status: NodeStatus, at: datetime) -> None:
        """A node reached a terminal status (each node does so once)."""
        run = self.nodes[node_id]
        if run.status not in NODE_TERMINAL:
            self.unsettled -= 1
            self.newly_settled.append(node_id)
        run.status = status
        run.closed_at = at

    # ----------------------------------------------------------------- commands

    @classmethod
    def start(
        cls,
        id: UUID,
        workspace_id: str,
        workflow_id: str,
        workflow_version: int,
        definition: dict[str, Any],
        input: Any,
        now: datetime,
        trigger: str = "manual",
        callback_url: str | None = None,
        idempotency_key: str | None = None,
        vars: dict[str, Any] | None = None,
        limits: Limits = DEFAULT_LIMITS,
        search_attributes: dict[str, Any] | None = None,
        started_by: dict[str, Any] | None = None,
        rerun_of: str | None = None,
        rerun: RerunPlan | None = None,
        concurrency_gate: UUID | None = None,
        queued: bool = False,
        refused: dict[str, Any] | None = None,
        priority: int | None = None,
    ) -> Execution:
        """A new execution. `search_attributes` are the ones the start request gave (checked);
        the definition's `settings.search_attributes` add theirs (`search_attribute_problems`
        says which could not be derived; it is not recorded). A re-run names the execution it
        re-runs (`rerun_of`) and records what its `rerun` plan keeps before anything runs. With
        `settings.concurrency`: the `concurrency_gate` it entered, and whether it waits there
        (`queued`); `refused`: the error it fails with at once (its key did not render).
        `priority` overrides the definition's `settings.priority`."""
        variables = dict(vars or {})
        templates = (definition.get("settings") or {}).get("search_attributes") or {}
        context = {
            "trigger": input,
            "nodes": {},
            "vars": variables,
            "execution": {
                "id": str(id),
                "workflow_id": workflow_id,
                "version": workflow_version,
                "started_at": now.isoformat(),
            },
        }
        bounds = ExpressionLimits(limits.max_expression_cost, limits.max_expression_result_bytes)
        attributes, problems = derive(templates, context, search_attributes or {}, bounds)
        execution = cls._create(
            cls.ExecutionStarted,
            id=id,
            workspace_id=workspace_id,
            workflow_id=workflow_id,
            workflow_version=workflow_version,
            definition=definition,
            input=input,
            trigger=trigger,
            callback_url=callback_url,
            idempotency_key=idempotency_key,
            vars=variables,
            search_attributes=attributes,
            started_by=started_by,
            rerun_of=rerun_of,
            timestamp=now,
            concurrency_gate=str(concurrency_gate) if concurrency_gate else None,
            priority=priority or (definition.get("settings") or {}).get("priority"),
        )
        execution.limits = limits
        execution.search_attribute_problems = tuple(problems.items())
        if refused is not None:
            execution.record(cls.ExecutionFailed, now, error=refused)
            return execution
        if rerun is not None:
            execution._keep(rerun, now)
        if queued:
            execution.record(cls.ExecutionQueued, now)
        else:
            execution._begin(now)
        return execution

    def admit(self, now: datetime) -> bool:
        """Its gate gave it a slot: it starts running. False (nothing recorded) unless queued."""
        if self.status != ExecutionStatus.QUEUED:
            return False
        self.record(self.ExecutionAdmitted, now)
        self._begin(now)
        return True

    def _begin(self, now: datetime) -> None:
        """Start running: the execution's timeout (counted from here) and the entry nodes."""
        limit = self.graph.settings.timeout_s
        if limit:
            fire_at = now + timedelta(seconds=limit)
            self._schedule_timer(TimerKind.EXECUTION_TIMEOUT, fire_at, now)
        self._advance(now, roots=True)

    def _keep(self, plan: RerunPlan, now: datetime) -> None:
        """Record what a re-run keeps from its original, before anything runs."""
        for node_id, output in plan.reused.items():
            node_type = self.graph.node(node_id).type
            self.record(self.NodeReused, now, node_id=node_id, node_type=node_type, output=output)
        for node_id in plan.skipped:
            node_type = self.graph.node(node_id).type
            self.record(self.NodeSkipped, now, node_id=node_id, node_type=node_type)

    @property
    def running(self) -> bool:
        return self.status == ExecutionStatus.RUNNING

    def complete_node(self, node_id: str, attempt: int, output: Any, now: datetime) -> bool:
        """A worker's result. Returns False (and records nothing) for a stale or repeated one."""
        if not self._is_current_attempt(node_id, attempt):
            return False
        self.record(self.NodeCompleted, now, node_id=node_id, attempt=attempt, output=output)
        self._advance(now)
        return True

    def start_node(self, node_id: str, attempt: int, now: datetime) -> bool:
        """A worker is about to run the attempt (nodes with a schedule-to-start timeout). False
        (and nothing recorded) unless the attempt is current and not started yet: the worker
        then does not run it. Its start-to-close timeout is kept durably from now on."""
        if not self._is_current_attempt(node_id, attempt):
            return False
        if self.nodes[node_id].status != NodeStatus.SCHEDULED:
            return False
        self.record(self.NodeStarted, now, node_id=node_id, attempt=attempt)
        node = self.graph.node(node_id)
        if node.timeout_s:
            fire_at = now + timedelta(seconds=node.timeout_s)
            self._schedule_timer(TimerKind.NODE_TIMEOUT, fire_at, now, node_id, attempt)
        return True

    def time_out_node(self, node_id: str, attempt: int, now: datetime) -> bool:
        """A worker ran the attempt for its whole start-to-close timeout. False (and nothing
        recorded) for a stale or repeated report."""
        if not self._is_current_attempt(node_id, attempt):
            return False
        self._time_out(self.graph.node(node_id), attempt, NodeTimeout.START_TO_CLOSE, now)
        return True

    def fail_node(
        self,
        node_id: str,
        attempt: int,
        error: dict[str, Any],
        now: datetime,
        retryable: bool = True,
    ) -> bool:
        """A worker's failure. Returns False (and records nothing) for a stale or repeated one."""
        if not self._is_current_attempt(node_id, attempt):
            return False
        node = self.graph.node(node_id)
        retry_at = self._retry_time(node, attempt, now) if retryable else None
        self.record(
            self.NodeFailed,
            now,
            node_id=node_id,
            attempt=attempt,
            error=error,
            will_retry=retry_at is not None,
        )
        self._after_attempt_ended(node, attempt, retry_at, now)
        return True

    def fire_timer(self, timer: str, now: datetime) -> bool:
        """A due timer. Returns False (and records nothing) when it already fired or is moot,
        e.g. the timeout of an attempt that has ended."""
        if not self.running or not self.timer_matters(timer):
            return False
        spec = self.timers[timer]
        self.record(self.TimerFired, now, timer_id=timer)
        kind, node_id, attempt = spec["kind"], spec["node_id"], spec["attempt"]
        if kind == TimerKind.EXECUTION_TIMEOUT:
            self._cancel_in_flight(now)
            self.record(self.ExecutionTimedOut, now)
        elif kind == TimerKind.DELAY:
            output = {"fired_at": now.isoformat()}
            self.record(self.NodeCompleted, now, node_id=node_id, attempt=attempt, output=output)
            self._advance(now)
        elif kind == TimerKind.RETRY:
            self._schedule_node(self.graph.node(node_id), attempt, now)
            self._advance(now)
        elif kind == TimerKind.WAIT_TIMEOUT:
            self._wait_ran_out(self.graph.node(node_id), attempt, now)
        elif kind == TimerKind.SCHEDULE_TO_START:
            self._time_out(self.graph.node(node_id), attempt, NodeTimeout.SCHEDULE_TO_START, now)
        else:  # node_timeout: the start-to-close timeout of an attempt a worker started
            self._time_out(self.graph.node(node_id), attempt, NodeTimeout.START_TO_CLOSE, now)
        return True

    def _time_out(self, node: Node, attempt: int, timeout: NodeTimeout, now: datetime) -> None:
        retry_at = (
            self._retry_time(node, attempt, now) if timeout == NodeTimeout.START_TO_CLOSE else None
        )
        self.record(
            self.NodeTimedOut,
            now,
            node_id=node.id,
            attempt=attempt,
            will_retry=retry_at is not None,
            timeout=timeout,
        )
        self._after_attempt_ended(node, attempt, retry_at, now)

    def timer_matters(self, timer: str) -> bool:
        spec = self.timers.get(timer)
        if spec is None:
            return False
        if spec["kind"] == TimerKind.EXECUTION_TIMEOUT:
            return True
        if spec["kind"] == TimerKind.RETRY:
            return self.nodes[spec["node_id"]].status == NodeStatus.RETRYING
        if spec["kind"] == TimerKind.SCHEDULE_TO_START:
            started = self.nodes[spec["node_id"]].status != NodeStatus.SCHEDULED
            if started:
                return False  # in time
        return self._is_current_attempt(spec["node_id"], spec["attempt"])

    def cancel(self, reason: str, now: datetime) -> bool:
        if not self.running and self.status != ExecutionStatus.QUEUED:
            return False
        self._cancel_in_flight(now)
        self.record(self.ExecutionCanceled, now, reason=reason)
        return True

    def receive_signal(
        self,
        name: str,
        payload: Any,
        actor: dict[str, Any],
        idempotency_key: str | None,
        now: datetime,
    ) -> bool:
        """A signal sent to the execution: delivered to the `wait_for_signal` node for `name`
        that has waited longest, or kept until one asks. False (and nothing recorded) for a
        repeated `idempotency_key`; a DomainError when the execution is closed
        (`execution_closed`) or the name or payload are invalid."""
        if idempotency_key is not None and idempotency_key in self.signal_keys:
            return False
        if not self.running:
            raise DomainError(f"the execution is {self.status}", "execution_closed")
        check_signal_name(name)
        check_payload(payload, self.limits)
        if sum(len(kept) for kept in self.inbox.values()) >= MAX_KEPT_SIGNALS:
            message = f"the execution already keeps {MAX_KEPT_SIGNALS} signals no node has taken"
            raise DomainError(message, "too_many_signals")
        self.record(
            self.SignalReceived,
            now,
            name=name,
            payload=payload,
            actor=actor,
            idempotency_key=idempotency_key,
        )
        waiting = [
            (run.started_at or now, self.graph.position(node_id), node_id)
            for node_id, run in self.nodes.items()
            if run.status == NodeStatus.RUNNING
            and self.graph.node(node_id).type == WAIT_FOR_SIGNAL
            and self.graph.node(node_id).config.get("signal") == name
        ]
        if waiting:
            node_id = min(waiting)[2]
            output = signal_output(self.inbox[name][0])
            attempt = self.nodes[node_id].attempts
            self.record(self.NodeCompleted, now, node_id=node_id, attempt=attempt, output=output)
            self._advance(now)
        return True

    def decide_approval(
        self,
        node_id: str,
        decision: str,
        comment: str | None,
        actor: dict[str, Any],
        role: str,
        now: datetime,
    ) -> bool:
        """An approver's decision on the waiting `approval` node `node_id`. False (and nothing
        recorded) for a repeat of the decision that completed it; a DomainError when there is
        no such node (`not_found`), the execution is closed (`execution_closed`), the node is
        not waiting (`node_not_waiting`), `role` is not among its approvers
        (`not_an_approver`) or `actor` started the execution and self-approval is off
        (`self_approval_refused`)."""
        if node_id not in self.nodes or self.graph.node(node_id).type != APPROVAL:
            raise DomainError(f"approval node {node_id!r} not found", "not_found")
        run = self.nodes[node_id]
        if run.status == NodeStatus.COMPLETED and isinstance(run.output, dict):
            given = (decision, comment, actor)
            if (
                run.output.get("decision"),
                run.output.get("comment"),
                run.output.get("actor"),
            ) == given:
                return False
        if not self.running:
            raise DomainError(f"the execution is {self.status}", "execution_closed")
        if run.status != NodeStatus.RUNNING:
            raise DomainError(f"node {node_id!r} is not waiting for a decision", "node_not_waiting")
        config = ApprovalConfig.model_validate(self.graph.node(node_id).config)
        if role not in config.approvers.roles:
            roles = ", ".join(config.approvers.roles)
            raise DomainError(f"only these roles may decide: {roles}", "not_an_approver")
        if not config.allow_self_approval and self.started_by is not None:
            if actor == self.started_by:
                message = "whoever started the execution may not approve it"
                raise DomainError(message, "self_approval_refused")
        attempt = run.attempts
        self.record(
            self.ApprovalDecided,
            now,
            node_id=node_id,
            attempt=attempt,
            decision=decision,
            comment=comment,
            actor=actor,
        )
        output = approval_output(decision, comment, actor, now.isoformat())
        self.record(self.NodeCompleted, now, node_id=node_id, attempt=attempt, output=output)
        self._advance(now)
        return True

    def record_callback_attempt(
        self,
        attempt: int,
        status_code: int | None,
        error: str | None,
        next_attempt_at: datetime | None,
        now: datetime,
    ) -> bool:
        """One attempt to deliver the final result to `callback_url`: a 2xx `status_code`
        acknowledges it; otherwise it failed, and without `next_attempt_at` delivery is given up.
        Returns False (and records nothing) unless the execution is closed, has a callback still
        pending and `attempt` is the next one: a repeated attempt is recorded once."""
        if (
            self.running
            or self.callback_url is None
            or self.callback_status != CallbackStatus.PENDING
            or attempt != self.callback_attempts + 1
        ):
            return False
        if status_code is not None and 200 <= status_code < 300:
            self.record(self.CallbackDelivered, now, attempt=attempt, status_code=status_code)
            return True
        self.record(
            self.CallbackFailed,
            now,
            attempt=attempt,
            status_code=status_code,
            error=error,
            next_attempt_at=next_attempt_at,
        )
        if next_attempt_at is None:
            self.record(self.CallbackAbandoned, now, attempts=attempt)
        return True

    # ----------------------------------------------------------------- decisions

    def _is_current_attempt(self, node_id: str | None, attempt: int | None) -> bool:
        if not self.running or node_id not in self.nodes:
            return False
        run = self.nodes[node_id]
        return run.status in CURRENT and run.attempts == attempt

    def _retry_time(self, node: Node, attempt: int, now: datetime) -> datetime | None:
        if node.retry is None or attempt >= node.retry.max_attempts:
            return None
        return now + timedelta(seconds=node.retry.delay_before(attempt))

    def _after_attempt_ended(
        self, node: Node, attempt: int, retry_at: datetime | None, now: datetime
    ) -> None:
        if retry_at is not None:
            self._schedule_timer(TimerKind.RETRY, retry_at, now, node.id, attempt + 1)
        elif node.on_error == "stop":
            self._cancel_in_flight(now)
            error = dict(self.nodes[node.id].error or {})
            error["node_id"] = node.id
            self.record(self.ExecutionFailed, now, error=error)
        else:
            self._advance(now)

    def _advance(self, now: datetime, roots: bool = False) -> None:
        """Run or skip every pending node whose parents are settled, until nothing changes;
        then close. Only the children of nodes settled since the last call (and, at the start,
        the `roots`) are looked at, in sweeps over the definition's order: a node is decided
        in the sweep that reaches it after its last parent settled, so a graph costs O(edges)
        in all, whatever its size."""
        order = self.graph.position
        sweep: list[tuple[int, str]] = []  # a heap: this sweep's nodes, in definition order
        later: list[tuple[int, str]] = []  # the next sweep's
        at = -1  # the position this sweep has reached
        if roots:
            sweep = [(order(n.id), n.id) for n in self.graph.nodes if not self.graph.incoming(n.id)]
        while self.running:
            for settled in self._drain_settled():
                for child in self.graph.children(settled):
                    if self.nodes[child].status == NodeStatus.PENDING:
                        if order(child) > at:
                            heapq.heappush(sweep, (order(child), child))
                        else:
                            later.append((order(child), child))
            if not sweep:
                if not later:
                    break
                sweep, later, at = later, [], -1
                heapq.heapify(sweep)
                continue
            at, node_id = heapq.heappop(sweep)
            if self.nodes[node_id].status != NodeStatus.PENDING:
                continue
            verdict = self._readiness(node_id)
            if verdict == "wait":
                continue
            node = self.graph.node(node_id)
            if verdict == "skip":
                self.record(self.NodeSkipped, now, node_id=node.id, node_type=node.type)
            else:
                self._schedule_node(node, 1, now)
        self.newly_settled.clear()
        if self.running and self.unsettled == 0:
            output = self._output()
            if json_size(output, self.limits.max_output_bytes) > self.limits.max_output_bytes:
                # Each leaf's output is within the limit, but not all of them together.
                message = (
                    f"the leaves' outputs together exceed {self.limits.max_output_bytes} bytes"
                )
                error = {"type": "output_too_large", "message": message}
                self.record(self.ExecutionFailed, now, error=error)
            else:
                self.record(self.ExecutionCompleted, now, output=output)

    def _drain_settled(self) -> list[str]:
        settled, self.newly_settled = self.newly_settled, []
        return settled

    def _readiness(self, node_id: str) -> str:
        """'wait' while a parent is unsettled; else 'skip' or 'run' (see docs/architecture.md)."""
        incoming = self.graph.incoming(node_id)
        if not incoming:
            return "run"
        alive = poisoned = False
        for edge in incoming:
            parent = self.nodes[edge.source]
            if parent.status not in NODE_TERMINAL:
                return "wait"
            if parent.status == NodeStatus.COMPLETED:
                branch = (parent.output or {}).get("branch") if edge.branch else None
                alive = alive or edge.branch is None or branch == edge.branch
            elif parent.failed_for_good:
                poisoned = True
        if poisoned or not alive:
            return "skip"
        return "run"

    def _schedule_node(self, node: Node, attempt: int, now: datetime) -> None:
        secrets: list[Any] = []
        limits = self.limits
        bounds = ExpressionLimits(limits.max_expression_cost, limits.max_expression_result_bytes)
        try:
            if node.type in DISPATCHED_TYPES:
                config, secrets = render_task(node.config, self.context(), bounds)
            else:
                config = render(node.config, self.context(), bounds)
        except ExpressionError as exc:
            self._record_scheduled(node, attempt, None, now)
            self._fail_inline(node, attempt, exc.code, str(exc), now)
            return
        if json_size(config, limits.max_output_bytes) > limits.max_output_bytes:
            # Each expression is bounded, but a config may hold many. (A transform's output is
            # its rendered config reshaped: this bounds it too.)
            self._record_scheduled(node, attempt, None, now)
            message = f"the rendered config exceeds {limits.max_output_bytes} bytes"
            self._fail_inline(node, attempt, "config_too_large", message, now)
            return
        if node.type in DISPATCHED_TYPES:
            # `timeout_s` counts from when a worker starts the attempt (the worker enforces it,
            # see `time_out_node`): time spent waiting in a queue is not the node's fault.
            task = {"type": node.type, "config": config, "timeout_s": node.timeout_s}
            if secrets:  # where the worker fills in credentials (see domain.expressions)
                task["secrets"] = secrets
            if node.schedule_to_start_s:
                task["schedule_to_start_s"] = node.schedule_to_start_s
            if self.priority is not None and self.priority != DEFAULT_PRIORITY:
                task["priority"] = self.priority
            self._record_scheduled(node, attempt, task, now)
            if node.schedule_to_start_s:
                fire_at = now + timedelta(seconds=node.schedule_to_start_s)
                self._schedule_timer(TimerKind.SCHEDULE_TO_START, fire_at, now, node.id, attempt)
        elif node.type in WAIT_TYPES:
            self._record_scheduled(node, attempt, None, now)
            self._begin_wait(node, attempt, config, now)
        elif node.type == "delay":
            self._record_scheduled(node, attempt, None, now)
            try:
                seconds = float(config["seconds"])
            except (TypeError, ValueError, KeyError):
                self._fail_inline(node, attempt, "invalid_config", "delay needs seconds", now)
                return
            try:
                fire_at = now + timedelta(seconds=max(seconds, 0.0))
            except OverflowError:
                self._fail_inline(node, attempt, "invalid_config", "delay is too long", now)
                return
            self._schedule_timer(TimerKind.DELAY, fire_at, now, node.id, attempt)
        else:
            self._record_scheduled(node, attempt, None, now)
            try:
                if node.type == "condition":
                    output: Any = {"branch": evaluate_condition(config)}
                else:
                    output = apply_transform(config)
            except (ValueError, TypeError) as exc:
                self._fail_inline(node, attempt, "node_error", str(exc), now)
                return
            self.record(self.NodeCompleted, now, node_id=node.id, attempt=attempt, output=output)

    def _begin_wait(self, node: Node, attempt: int, config: dict[str, Any], now: datetime) -> None:
        """A waiting node starts waiting (status `running`): a `wait_for_signal` takes the
        oldest signal kept under its name at once; otherwise its `timeout_s` starts a timer."""
        self.record(self.NodeStarted, now, node_id=node.id, attempt=attempt)
        kept = self.inbox.get(config.get("signal", "")) if node.type == WAIT_FOR_SIGNAL else None
        if kept:
            output = signal_output(kept[0])
            self.record(self.NodeCompleted, now, node_id=node.id, attempt=attempt, output=output)
            return
        timeout_s = config.get("timeout_s")
        if timeout_s:
            fire_at = now + timedelta(seconds=float(timeout_s))
            self._schedule_timer(TimerKind.WAIT_TIMEOUT, fire_at, now, node.id, attempt)

    def _wait_ran_out(self, node: Node, attempt: int, now: datetime) -> None:
        """A waiting node's `timeout_s` passed: it takes its `timeout` branch when it has one,
        else it times out (and the execution fails unless `on_error` is `continue`)."""
        if any(e.source == node.id and e.branch == TIMEOUT_BRANCH for e in self.graph.edges):
            output = timeout_output(node.type, node.config)
            self.record(self.NodeCompleted, now, node_id=node.id, attempt=attempt, output=output)
            self._advance(now)
            return
        self.record(
            self.NodeTimedOut,
            now,
            node_id=node.id,
            attempt=attempt,
            will_retry=False,
            timeout=NodeTimeout.START_TO_CLOSE,
        )
        self._after_attempt_ended(node, attempt, None, now)

    def _record_scheduled(
        self, node: Node, attempt: int, task: dict[str, Any] | None, now: datetime
    ) -> None:
        self.record(
            self.NodeScheduled,
            now,
            node_id=node.id,
            node_type=node.type,
            attempt=attempt,
            queue=node.queue,
            task=task,
        )

    def _fail_inline(
        self, node: Node, attempt: int, kind: str, message: str, now: datetime
    ) -> None:
        """A deterministic failure (bad expression, bad config): retrying cannot help."""
        error = {"type": kind, "message": message}
        self.record(
            self.NodeFailed, now, node_id=node.id, attempt=attempt, error=error, will_retry=False
        )
        self._after_attempt_ended(node, attempt, None, now)

    def _schedule_timer(
        self,
        kind: TimerKind,
        fire_at: datetime,
        now: datetime,
        node_id: str | None = None,
        attempt: int | None = None,
    ) -> None:
        self.record(
            self.TimerScheduled,
            now,
            timer_id=timer_id(self.id, kind, node_id or "", attempt or 0),
            kind=kind,
            fire_at=fire_at,
            node_id=node_id,
            attempt=attempt,
        )

    def _cancel_in_flight(self, now: datetime) -> None:
        for node_id, run in self.nodes.items():
            if run.status in IN_FLIGHT:
                self.record(self.NodeCanceled, now, node_id=node_id, attempt=run.attempts)

    def _output(self) -> Any:
        done = [n for n in self.graph.leaves() if self.nodes[n].status == NodeStatus.COMPLETED]
        if not done:
            return None
        if len(done) == 1:
            return self.nodes[done[0]].output
        return {n: self.nodes[n].output for n in done}

    # ----------------------------------------------------------------- views

    def context(self) -> dict[str, Any]:
        """What `{{ … }}` expressions in node configs can reach."""
        return {
            "trigger": self.input,
            "nodes": self.outputs,
            "vars": self.vars,
            "execution": {
                "id": str(self.id),
                "workflow_id": self.workflow_id,
                "version": self.workflow_version,
                "started_at": self.created_on.isoformat(),
                "signal_url": signal_url_map(
                    self.limits.signal_urls, self.workspace_id, str(self.id), self.created_on
                ),
            },
        }


# Each event that closes an execution, and the status it closes it with.
CLOSED_STATUS: dict[type[Aggregate.Event], ExecutionStatus] = {
    Execution.ExecutionCompleted: ExecutionStatus.COMPLETED,
    Execution.ExecutionFailed: ExecutionStatus.FAILED,
    Execution.ExecutionCanceled: ExecutionStatus.CANCELED,
    Execution.ExecutionTimedOut: ExecutionStatus.TIMED_OUT,
}
EXECUTION_CLOSED: tuple[type[Aggregate.Event], ...] = tuple(CLOSED_STATUS)
