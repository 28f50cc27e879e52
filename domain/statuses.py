"""The statuses of executions, node runs and callback deliveries, and the kinds of durable timers
and of node timeouts.

Each is a `StrEnum` whose values are the strings written in events, read models, API answers
and stream messages: a member *is* its string (`ExecutionStatus.RUNNING == "running"`), so
nothing changes on the wire, and a value decoded from an event (a plain `str`) compares equal
to its member.

Pure (stdlib only). Imported by the domain, commands, projections, the engine and the gateways.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "CURRENT",
    "IN_FLIGHT",
    "NODE_TERMINAL",
    "CallbackStatus",
    "ExecutionStatus",
    "NodeStatus",
    "NodeTimeout",
    "TimerKind",
]


class ExecutionStatus(StrEnum):
    """An execution runs until one of the four closing events settles it for good. QUEUED: it
    waits for a slot of its workflow's `settings.concurrency` (domain.concurrency)."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"
    TIMED_OUT = "timed_out"
    QUEUED = "queued"


class NodeStatus(StrEnum):
    """A node run's status (ARCHITECTURE.md section 4) plus the internal PENDING (not reached
    yet) and RETRYING (waiting on a back-off timer; reported as SCHEDULED). A dispatched
    attempt is SCHEDULED until its result, or RUNNING once a worker records its start (only
    nodes with a schedule-to-start timeout do: see `Execution.start_node`)."""

    PENDING = "pending"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    RETRYING = "retrying"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELED = "canceled"
    TIMED_OUT = "timed_out"


# An attempt a worker's result (or a timeout) may still end.
CURRENT = frozenset({NodeStatus.SCHEDULED, NodeStatus.RUNNING})
# What canceling the execution cancels.
IN_FLIGHT = frozenset({NodeStatus.SCHEDULED, NodeStatus.RUNNING, NodeStatus.RETRYING})
# Settled for good: each node reaches one of these once.
NODE_TERMINAL = frozenset(
    {
        NodeStatus.COMPLETED,
        NodeStatus.FAILED,
        NodeStatus.SKIPPED,
        NodeStatus.CANCELED,
        NodeStatus.TIMED_OUT,
    }
)


class CallbackStatus(StrEnum):
    """Delivery of a closed execution's final result to its callback URL."""

    PENDING = "pending"  # until delivered or abandoned
    DELIVERED = "delivered"
    ABANDONED = "abandoned"


class TimerKind(StrEnum):
    """What a durable timer (TimerScheduled's `kind`, part of its id) does when it fires."""

    EXECUTION_TIMEOUT = "execution_timeout"  # the workflow's `settings.timeout_s`
    DELAY = "delay"  # a delay node completes
    RETRY = "retry"  # the next attempt of a failed node is scheduled
    SCHEDULE_TO_START = "schedule_to_start"  # no worker started the attempt in time
    NODE_TIMEOUT = "node_timeout"  # the start-to-close timeout of a started attempt
    WAIT_TIMEOUT = "wait_timeout"  # a wait_for_signal or approval node waited `timeout_s`


class NodeTimeout(StrEnum):
    """Which timeout an attempt ran out of (NodeTimedOut's `timeout`)."""

    START_TO_CLOSE = "start_to_close"  # it ran longer than the node's `timeout_s`
    SCHEDULE_TO_START = "schedule_to_start"  # not started within `schedule_to_start_s`
