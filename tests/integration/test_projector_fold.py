"""The projector's folded batches on the real PostgreSQL: whatever the batch boundaries, the
execution and node read-model rows are the same as applying the events one at a time."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from examples import load_example
from stack import roles

from domain.definition import parse_definition
from domain.execution import Execution
from infra.settings import Settings
from projections.visibility import project

T0 = datetime(2026, 1, 1, tzinfo=UTC)
HTTP_ERROR = {"type": "http_status", "message": "HTTP 500"}


def _start(example: str | dict[str, Any], input: Any, callback: str | None = None) -> Execution:
    raw = load_example(example) if isinstance(example, str) else example
    definition = parse_definition(raw).to_json()
    return Execution.start(
        uuid4(), str(uuid4()), str(uuid4()), 1, definition, input, T0, callback_url=callback
    )


def _timer(ex: Execution, kind: str) -> str:
    [timer] = [t for t, spec in ex.timers.items() if spec["kind"] == kind and ex.timer_matters(t)]
    return timer


def scenarios() -> list[Execution]:
    """Executions that between them record every event type the two tables follow."""
    order = {"base_url": "http://h", "order_id": 42}
    paid = _start("order-followup.json", order, callback="http://receiver/cb")
    paid.complete_node("fetch", 1, {"status_code": 200, "body": {"status": "paid", "total": 7}}, T0)
    paid.fire_timer(_timer(paid, "delay"), T0 + timedelta(seconds=1))
    paid.record_callback_attempt(1, 500, "HTTP 500", T0 + timedelta(seconds=5), T0)
    paid.record_callback_attempt(2, 200, None, None, T0 + timedelta(seconds=6))

    retried = _start("retry-then-succeed.json", {"base_url": "http://h", "key": "k"})
    for attempt in (1, 2):
        retried.fail_node("call", attempt, HTTP_ERROR, T0)
        retried.fire_timer(_timer(retried, "retry"), T0 + timedelta(seconds=attempt))
    retried.complete_node("call", 3, {"body": {"ok": True}}, T0 + timedelta(seconds=3))

    timed_out = _start("timeout.json", {"base_url": "http://h"})
    timed_out.time_out_node("slow", 1, T0 + timedelta(seconds=1))

    continued = _start("continue-on-error.json", {"base_url": "http://h"})
    continued.fail_node("lookup", 1, HTTP_ERROR, T0)

    canceled = _start("fan-out-join.json", {"base_url": "http://h"})
    canceled.complete_node("a", 1, {"body": {"price": 3}}, T0)
    canceled.cancel("user asked", T0 + timedelta(seconds=1))

    expired = _start("order-followup.json", order)
    expired.fire_timer(_timer(expired, "execution_timeout"), T0 + timedelta(seconds=60))

    inline = _start(
        {
            "name": "pure",
            "nodes": [
                {"id": "a", "type": "transform", "config": {"set": {"x": 1}}},
                {"id": "b", "type": "transform", "config": {"set": {"y": 2}}},
            ],
            "edges": [{"source": "a", "target": "b"}],
        },
        {"n": 1},
    )
    running = _start("fan-out-join.json", {"base_url": "http://h"})
    running.complete_node("a", 1, {"body": {"price": 3}}, T0)
    queue_bound = {
        "name": "queue-bound",
        "nodes": [{"id": "q", "type": "http_request", "config": {"url": "http://h"},
                   "schedule_to_start_s": 5, "timeout_s": 10}],
    }  # fmt: skip
    started = _start(queue_bound, {})
    started.start_node("q", 1, T0 + timedelta(seconds=1))
    never_started = _start(queue_bound, {})
    never_started.fire_timer(_timer(never_started, "schedule_to_start"), T0 + timedelta(seconds=5))
    return [
        paid, retried, timed_out, continued, canceled, expired, inline, running, started,
        never_started,
    ]  # fmt: skip


def _log(executions: list[Execution]) -> list[Any]:
    """The executions' events in one order the log could hold: interleaved, each execution's own
    events in their order."""
    queues = [list(ex.collect_events()) for ex in executions]
    rng, log = random.Random(7), []
    while any(queues):
        queue = rng.choice([q for q in queues if q])
        log.append(queue.pop(0))
    return log


async def _rows(conn: Any, ids: list[UUID]) -> tuple[list[Any], list[Any]]:
    cur = await conn.execute("SELECT * FROM rm_executions WHERE id = ANY(%s) ORDER BY id", (ids,))
    executions = await cur.fetchall()
    cur = await conn.execute(
        "SELECT * FROM rm_node_runs WHERE execution_id = ANY(%s) ORDER BY execution_id, node_id",
        (ids,),
    )
    return executions, await cur.fetchall()


async def test_batch_boundaries_do_not_change_the_rows(settings: Settings) -> None:
    executions = scenarios()
    ids = [ex.id for ex in executions]
    log = _log(executions)
    assert {type(e).__name__ for e in log} >= {
        "ExecutionStarted", "ExecutionCompleted", "ExecutionFailed", "ExecutionCanceled",
        "ExecutionTimedOut", "NodeScheduled", "NodeCompleted", "NodeFailed", "NodeTimedOut",
        "NodeSkipped", "NodeCanceled", "CallbackFailed", "CallbackDelivered", "NodeStarted",
    }  # fmt: skip
    results = []
    async with roles(settings) as r:
        for size in (1, 2, 5, len(log)):
            async with r.container.pool.connection() as conn:
                for start in range(0, len(log), size):
                    async with conn.transaction():
                        await project(conn, [(None, e) for e in log[start : start + size]])
                results.append(await _rows(conn, ids))
                await conn.execute("DELETE FROM rm_executions WHERE id = ANY(%s)", (ids,))
                await conn.execute("DELETE FROM rm_node_runs WHERE execution_id = ANY(%s)", (ids,))
                await conn.commit()
    one_by_one = results[0]
    assert len(one_by_one[0]) == len(executions)
    statuses = {row["id"]: row["status"] for row in one_by_one[0]}
    assert [statuses[i] for i in ids] == [
        "completed", "completed", "failed", "completed", "canceled", "timed_out", "completed",
        "running", "running", "failed",
    ]  # fmt: skip
    callback = next(row["callback"] for row in one_by_one[0] if row["id"] == ids[0])
    assert callback == {"url": "http://receiver/cb", "status": "delivered", "attempts": 2}
    nodes = {(row["execution_id"], row["node_id"]): row for row in one_by_one[1]}
    assert (nodes[ids[1], "call"]["status"], nodes[ids[1], "call"]["attempts"]) == ("completed", 3)
    assert nodes[ids[2], "slow"]["status"] == "timed_out"
    assert nodes[ids[3], "use"]["status"] == "skipped"
    assert nodes[ids[4], "b"]["status"] == "canceled"
    assert nodes[ids[8], "q"]["status"] == "running"
    assert (nodes[ids[9], "q"]["status"], nodes[ids[9], "q"]["error"]["type"]) == (
        "timed_out",
        "schedule_to_start_timeout",
    )
    for batched in results[1:]:
        assert batched == one_by_one
