"""What the event log says about executions, read straight from `linkflow_events` for the fault
shapes' checks: when each node attempt began and ended, how many closing events each execution
has, and — set against the calls the target recorded (`bench.target`) — which outbound calls
were made for attempts that had already ended, and which repeated a call of the same attempt.

The attempt number is not in a call's URL (expressions see the execution, not the attempt), so
a call is attributed to the latest attempt of its (execution, node) scheduled before it
arrived: a call after that attempt's end (or its execution's close) is a call for an ended
attempt; a second call within one attempt is a repeat. Event timestamps are the engine's wall
clock, the calls' the target's: the same machine's clock.
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg

from infra.eventstore import EVENTS_TABLE

ATTEMPT_ENDS = ("NodeCompleted", "NodeFailed", "NodeTimedOut", "NodeCanceled")
CLOSINGS = ("ExecutionCompleted", "ExecutionFailed", "ExecutionCanceled", "ExecutionTimedOut")
TRACKED = ("ExecutionStarted", "NodeScheduled", *ATTEMPT_ENDS, *CLOSINGS)

_EVENTS = (
    "SELECT originator_id, topic, s->'timestamp'->>'_data_' AS ts, s->>'node_id' AS node,"
    " (s->>'attempt')::int AS attempt, s->>'node_type' AS node_type,"
    " s->'task' IS NOT NULL AND s->'task' <> 'null'::jsonb AS dispatched"
    " FROM (SELECT originator_id, topic, convert_from(state, 'UTF8')::jsonb AS s"
    f" FROM {EVENTS_TABLE} WHERE topic LIKE %s) e"  # noqa: S608
)


def _name(topic: str) -> str:
    return topic.rsplit(".", 1)[-1]


@dataclass
class Attempt:
    number: int
    scheduled_at: float
    ended_at: float | None = None
    how: str | None = None  # the ending event's name
    calls: int = 0


@dataclass
class ExecutionLog:
    """The executions of one database: starts, closings, node attempts."""

    started: set[str] = field(default_factory=set)
    closings: Counter[str] = field(default_factory=Counter)
    closed_at: dict[str, float] = field(default_factory=dict)  # the first closing's time
    closed_how: dict[str, str] = field(default_factory=dict)
    attempts: dict[tuple[str, str], list[Attempt]] = field(default_factory=dict)

    @classmethod
    async def read(cls, conn: psycopg.AsyncConnection[Any]) -> ExecutionLog:
        log = cls()
        cur = await conn.execute(_EVENTS, ("%:Execution.%",))  # type: ignore[arg-type]
        rows = await cur.fetchall()
        ends: list[tuple[str, str, int, float, str]] = []
        for oid, topic, ts, node, attempt, _, dispatched in rows:
            name = _name(topic)
            if name not in TRACKED:
                continue
            execution = str(oid)
            at = datetime.fromisoformat(ts).timestamp()
            if name == "ExecutionStarted":
                log.started.add(execution)
            elif name in CLOSINGS:
                log.closings[execution] += 1
                if execution not in log.closed_at or at < log.closed_at[execution]:
                    log.closed_at[execution] = at
                    log.closed_how[execution] = name
            elif name == "NodeScheduled":
                if dispatched:  # an attempt a worker runs (not an inline node's)
                    key = (execution, node)
                    log.attempts.setdefault(key, []).append(Attempt(attempt, at))
            else:
                ends.append((execution, node, attempt, at, name))
        for runs in log.attempts.values():
            runs.sort(key=lambda a: a.number)
        for execution, node, number, at, name in ends:
            for run in log.attempts.get((execution, node), ()):
                if run.number == number and run.ended_at is None:
                    run.ended_at, run.how = at, name
        return log

    def closing_check(self, accepted: set[str]) -> dict[str, Any]:
        """Closing events per execution: every accepted execution should have exactly one."""
        counts = Counter(min(self.closings.get(e, 0), 2) for e in accepted)
        return {
            "executions": len(accepted),
            "closed_once": counts[1],
            "not_closed": counts[0],
            "closed_more_than_once": counts[2],
            "started_in_log": len(self.started),
            "started_in_log_not_accepted": len(self.started - accepted),
            "accepted_not_in_log": len(accepted - self.started),
        }

    def attempt_endings(self) -> dict[str, int]:
        """How the dispatched attempts ended (event names; `open` for those that did not)."""
        return dict(Counter(run.how or "open" for runs in self.attempts.values() for run in runs))


@dataclass
class CallCheck:
    total: int = 0
    for_ended_attempts: int = 0  # arrived after its attempt ended or its execution closed
    repeated: int = 0  # beyond one per (execution, node, attempt)
    unmatched: int = 0  # no attempt of that (execution, node) was scheduled before it
    attempts_called: int = 0
    attempts_not_called: int = 0  # dispatched attempts no call arrived for
    last_call_after_last_close_s: float | None = None
    ended_late_s: list[float] = field(default_factory=list)  # how long after the end
    repeated_at: list[float] = field(default_factory=list)  # wall clock of each repeat

    def summary(self) -> dict[str, Any]:
        late = sorted(self.ended_late_s)
        return {
            "calls_total": self.total,
            "calls_for_ended_attempts": self.for_ended_attempts,
            "repeated_calls": self.repeated,
            "calls_unmatched": self.unmatched,
            "attempts_called": self.attempts_called,
            "attempts_not_called": self.attempts_not_called,
            "ended_call_late_max_s": round(late[-1], 1) if late else None,
            "last_call_after_last_close_s": self.last_call_after_last_close_s,
        }


def hop_times(
    log: ExecutionLog, calls: list[tuple[str, str, float]], executions: set[str]
) -> dict[str, list[float]]:
    """For the dispatched first attempts of `executions` (ms): `wait`, NodeScheduled → the call's
    arrival at the target (dispatch and queueing), and `node`, NodeScheduled → the attempt's
    end (the whole hop)."""
    arrived: dict[tuple[str, str], float] = {}
    for execution, node, at in calls:
        if execution in executions:
            arrived.setdefault((execution, node), at)
    wait: list[float] = []
    whole: list[float] = []
    for key, runs in log.attempts.items():
        if key[0] not in executions or not runs:
            continue
        first = runs[0]
        if key in arrived:
            wait.append((arrived[key] - first.scheduled_at) * 1000)
        if first.ended_at is not None:
            whole.append((first.ended_at - first.scheduled_at) * 1000)
    return {"wait": wait, "node": whole}


def check_calls(log: ExecutionLog, calls: list[tuple[str, str, float]]) -> CallCheck:
    """Attribute each recorded call to an attempt (see the module docstring)."""
    check = CallCheck(total=len(calls))
    starts = {key: [a.scheduled_at for a in runs] for key, runs in log.attempts.items()}
    for execution, node, at in calls:
        runs = log.attempts.get((execution, node))
        i = bisect.bisect_right(starts[(execution, node)], at) - 1 if runs else -1
        if runs is None or i < 0:
            check.unmatched += 1
            continue
        run = runs[i]
        run.calls += 1
        if run.calls > 1:
            check.repeated += 1
            check.repeated_at.append(at)
        ended = [t for t in (run.ended_at, log.closed_at.get(execution)) if t is not None]
        if ended and at > min(ended):
            check.for_ended_attempts += 1
            check.ended_late_s.append(at - min(ended))
    for runs in log.attempts.values():
        for run in runs:
            if run.calls:
                check.attempts_called += 1
            else:
                check.attempts_not_called += 1
            run.calls = 0  # the log may be checked again
    if calls and log.closed_at:
        last_close = max(log.closed_at.values())
        check.last_call_after_last_close_s = round(max(c[2] for c in calls) - last_close, 1)
    return check
