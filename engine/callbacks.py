"""Callbacks: POST each closed execution's final result to its callback URL, signed with the
workspace's signing secret (LinkFlow headers, infra.signing), retried with back-off until a 2xx
answer acknowledges it or `LINKFLOW_CALLBACK_MAX_ATTEMPTS` attempts failed.

`engine_callbacks` holds one row per execution started with a callback URL (ExecutionStarted);
the execution's close makes it due. The delivery loop claims due rows (`FOR UPDATE SKIP LOCKED`),
POSTs, records the attempt on the Execution (`RecordCallbackAttempt`, idempotent by attempt
number) and only then updates the row; the Callback* events update it too (a row locked by the
delivery loop is left to it), so the table stays derivable from the log. A crash between a POST
and its record repeats that one POST: delivery is at-least-once, receivers dedupe by
`execution_id`. Consumer group / position: `callbacks`.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import aiohttp
from eventsourcing.utils import get_topic
from psycopg.types.json import Jsonb

from commands.bus import CommandBus
from commands.callbacks import RecordCallbackAttempt
from domain.execution import CLOSED_STATUS, EXECUTION_CLOSED, Execution
from domain.statuses import CallbackStatus
from infra import metrics
from infra.consumer import EventConsumer
from infra.crypto import SecretBox
from infra.db import DictConnection
from infra.eventlog import LoggedEvent
from infra.logging import get_logger, log_event
from infra.outages import OUTAGES
from infra.outbound import ForbiddenTarget, InvalidTarget, check_url, make_session
from infra.settings import Settings
from infra.signing import sign

log = get_logger(__name__)

POST_TIMEOUT_S = 10.0
ERROR_LIMIT = 500

_STARTED = get_topic(Execution.ExecutionStarted)
_CLOSED_TOPICS = frozenset(get_topic(c) for c in EXECUTION_CLOSED)

# Callback* events applied to a row no delivery loop holds; never moving it backwards.
_UNLOCKED = (
    "execution_id IN (SELECT execution_id FROM engine_callbacks WHERE execution_id = %s"
    " AND attempts <= %s FOR UPDATE SKIP LOCKED)"
)


def backoff_s(attempt: int, base_s: float, max_s: float) -> float:
    """The wait after failed attempt `attempt` (1, 2, …): base · 2^(attempt − 1), at most max."""
    return min(max_s, base_s * 2.0 ** min(attempt - 1, 64))


def retry_time(attempt: int, now: datetime, settings: Settings) -> datetime | None:
    """When attempt `attempt + 1` is due, or None when `attempt` was the last one allowed."""
    if attempt >= settings.callback_max_attempts:
        return None
    delay = backoff_s(attempt, settings.callback_backoff_s, settings.callback_backoff_max_s)
    return now + timedelta(seconds=delay)


def final_result(event: Any) -> dict[str, Any]:
    """What a close event tells the receiver: status, output, error, closed_at."""
    return {
        "status": CLOSED_STATUS[type(event)],
        "output": getattr(event, "output", None),
        "error": getattr(event, "error", None),
        "closed_at": event.timestamp.isoformat(),
    }


async def _record_closings(conn: DictConnection, closings: list[tuple[Any, ...]]) -> None:
    """Store final results on their rows (those still without one); empties `closings`."""
    if closings:
        async with conn.cursor() as cur:
            await cur.executemany(
                "UPDATE engine_callbacks SET result = %s, next_attempt_at = %s"
                " WHERE execution_id = %s AND result IS NULL",
                closings,
            )
        closings.clear()


async def _apply_attempt(conn: DictConnection, e: Any) -> None:
    """A recorded attempt, applied to a row no delivery loop holds (never moving it back)."""
    if isinstance(e, Execution.CallbackDelivered):
        await conn.execute(
            "UPDATE engine_callbacks SET attempts = %s, next_attempt_at = NULL,"
            f" delivered_at = %s WHERE {_UNLOCKED}",
            (e.attempt, e.timestamp, e.originator_id, e.attempt),
        )
    elif isinstance(e, Execution.CallbackFailed):
        await conn.execute(
            f"UPDATE engine_callbacks SET attempts = %s, next_attempt_at = %s WHERE {_UNLOCKED}",
            (e.attempt, e.next_attempt_at, e.originator_id, e.attempt),
        )
    elif isinstance(e, Execution.CallbackAbandoned):
        await conn.execute(
            "UPDATE engine_callbacks SET next_attempt_at = NULL, abandoned_at = %s"
            f" WHERE {_UNLOCKED}",
            (e.timestamp, e.originator_id, e.attempts),
        )


class Callbacks(EventConsumer):
    name = "callbacks"
    linger_ms = 100
    handles = (
        Execution.ExecutionStarted,
        *EXECUTION_CLOSED,
        Execution.CallbackDelivered,
        Execution.CallbackFailed,
        Execution.CallbackAbandoned,
    )

    def __init__(
        self, settings: Settings, bus: CommandBus, box: SecretBox, *args: Any, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.settings = settings
        self.bus = bus
        self.box = box
        self.wake = asyncio.Event()
        self.session: aiohttp.ClientSession | None = None
        # Executions with a callback row still waiting for their result: closings of the
        # others (most executions have no callback URL) are neither decoded nor applied.
        self.awaiting: set[UUID] = set()

    async def prepare_state(self) -> None:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT execution_id FROM engine_callbacks WHERE result IS NULL"
            )
            rows = await cur.fetchall()
            await conn.commit()
        self.awaiting = {row["execution_id"] for row in rows}

    def decode_batch(self, events: list[LoggedEvent]) -> list[tuple[LoggedEvent, Any]]:
        """Starts with a callback URL, closings of executions awaiting one, Callback* events."""
        wanted: list[tuple[LoggedEvent, Any]] = []
        started_here: set[UUID] = set()
        for e in events:
            if e.topic == _STARTED:
                event = self.decode(e)
                if event.callback_url:
                    started_here.add(e.originator_id)
                    wanted.append((e, event))
            elif e.topic in _CLOSED_TOPICS:
                if e.originator_id in self.awaiting or e.originator_id in started_here:
                    wanted.append((e, self.decode(e)))
            elif e.topic in self.topics:
                wanted.append((e, self.decode(e)))
        return wanted

    async def apply(self, conn: DictConnection, events: list[tuple[LoggedEvent, Any]]) -> None:
        # In log order; closings are sent together (one pipelined round trip: most closing
        # executions have no callback row), before any later Callback* event is applied.
        closings: list[tuple[Any, ...]] = []
        for _, e in events:
            if isinstance(e, Execution.ExecutionStarted):
                if e.callback_url:
                    await conn.execute(
                        "INSERT INTO engine_callbacks (execution_id, workspace_id, workflow_id,"
                        " url) VALUES (%s, %s, %s, %s) ON CONFLICT (execution_id) DO NOTHING",
                        (e.originator_id, e.workspace_id, e.workflow_id, e.callback_url),
                    )
            elif type(e) in CLOSED_STATUS:
                closings.append((Jsonb(final_result(e)), e.timestamp, e.originator_id))
            else:
                await _record_closings(conn, closings)
                await _apply_attempt(conn, e)
        await _record_closings(conn, closings)

    async def after_commit(self, events: list[tuple[LoggedEvent, Any]]) -> None:
        closed = False
        for _, event in events:
            if isinstance(event, Execution.ExecutionStarted):
                self.awaiting.add(event.originator_id)
            elif type(event) in CLOSED_STATUS:
                self.awaiting.discard(event.originator_id)
                closed = True
        if closed:
            self.wake.set()

    # ----------------------------------------------------------------- delivery

    async def deliver_due(self, batch: int = 50) -> int:
        """Make one attempt for each due callback (at most `batch`); returns how many were
        recorded."""
        recorded = 0
        async with self.pool.connection() as conn:
            async with conn.transaction():
                cur = await conn.execute(
                    "SELECT execution_id, workspace_id, workflow_id, url, result, attempts"
                    " FROM engine_callbacks WHERE next_attempt_at <= %s"
                    " ORDER BY next_attempt_at LIMIT %s FOR UPDATE SKIP LOCKED",
                    (datetime.now(UTC), batch),
                )
                due = await cur.fetchall()
                outcomes = await asyncio.gather(
                    *(self._attempt(row) for row in due), return_exceptions=True
                )
                for row, outcome in zip(due, outcomes, strict=True):
                    if isinstance(outcome, BaseException):
                        # Not recorded: the row stays due and the attempt is made again.
                        if OUTAGES.report(outcome, where="callback record") is not None:
                            continue
                        log.error(
                            "callback_record_failed",
                            extra={
                                "fields": {
                                    "execution_id": str(row["execution_id"]),
                                    "error": repr(outcome),
                                }
                            },
                        )
                        continue
                    await self._settle(conn, row["execution_id"], outcome)
                    recorded += 1
        return recorded

    async def _attempt(self, row: dict[str, Any]) -> dict[str, Any]:
        """POST once, record the outcome on the Execution; returns its delivery state."""
        attempt = row["attempts"] + 1
        status_code, error, final = await self._post(row)
        at = datetime.now(UTC)
        delivered = status_code is not None and 200 <= status_code < 300
        retry_at = None if delivered or final else retry_time(attempt, at, self.settings)
        result = await self.bus.execute(
            RecordCallbackAttempt(
                execution_id=row["execution_id"],
                attempt=attempt,
                status_code=status_code,
                error=error,
                next_attempt_at=retry_at,
            )
        )
        outcome = "delivered" if delivered else ("failed" if retry_at else "abandoned")
        metrics.CALLBACK_ATTEMPTS.labels(outcome).inc()
        log_event(
            log,
            "callback_attempt",
            execution_id=str(row["execution_id"]),
            attempt=attempt,
            status_code=status_code,
            outcome=outcome,
        )
        return result.fields | {"at": at}

    async def _post(self, row: dict[str, Any]) -> tuple[int | None, str | None, bool]:
        """(status code, error, final): `final` when retrying cannot help (a refused URL)."""
        assert self.session is not None, "deliver_loop opens the session"
        allow_private = self.settings.allow_private_network
        try:
            target = check_url(row["url"], allow_private)
        except (InvalidTarget, ForbiddenTarget) as exc:
            return None, str(exc)[:ERROR_LIMIT], True
        body = json.dumps(
            {
                "execution_id": str(row["execution_id"]),
                "workflow_id": str(row["workflow_id"]),
                "workspace_id": str(row["workspace_id"]),
                **row["result"],
            },
            separators=(",", ":"),
        ).encode()
        secret = self.box.signing_secret(str(row["workspace_id"]))
        headers = {"Content-Type": "application/json"} | sign(secret, body, datetime.now(UTC))
        try:
            async with self.session.post(
                target,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=POST_TIMEOUT_S),
            ) as response:
                return response.status, None, False
        except TimeoutError:
            return None, f"no answer within {POST_TIMEOUT_S:g} s", False
        except Exception as exc:  # connection refused, DNS, a refused address …: retry
            return None, (f"{type(exc).__name__}: {exc}")[:ERROR_LIMIT], False

    async def _settle(self, conn: DictConnection, execution_id: Any, state: dict[str, Any]) -> None:
        """Write the Execution's delivery state (as the command answered it) to the row."""
        status, at = state["callback_status"], state["at"]
        pending = status == CallbackStatus.PENDING
        next_at = state["next_attempt_at"] if pending else None
        if pending and next_at is None:  # nothing recorded: try again later
            next_at = at + timedelta(seconds=self.settings.callback_backoff_s)
        await conn.execute(
            "UPDATE engine_callbacks SET attempts = %s, next_attempt_at = %s,"
            " delivered_at = CASE WHEN %s THEN coalesce(delivered_at, %s) END,"
            " abandoned_at = CASE WHEN %s THEN coalesce(abandoned_at, %s) END"
            " WHERE execution_id = %s",
            (
                state["attempts"],
                next_at,
                status == CallbackStatus.DELIVERED,
                at,
                status == CallbackStatus.ABANDONED,
                at,
                execution_id,
            ),
        )

    async def next_due_in(self) -> float:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT min(next_attempt_at) AS at FROM engine_callbacks"
                " WHERE next_attempt_at IS NOT NULL"
            )
            row = await cur.fetchone()
            await conn.commit()
        if row is None or row["at"] is None:
            return 1.0
        return max(0.0, min(1.0, (row["at"] - datetime.now(UTC)).total_seconds()))

    async def deliver_loop(self, stop: asyncio.Event) -> None:
        """Deliver due callbacks until stopped; a batch in flight finishes first."""
        self.session = make_session(self.settings.allow_private_network)
        try:
            while not stop.is_set():
                failed = True
                # PostgreSQL away: said once (infra.outages), tried again after a pause.
                with OUTAGES.guard("callback loop failed", logger=log):
                    if await self.deliver_due() == 0:
                        delay = await self.next_due_in()
                        self.wake.clear()
                        await self._wait(delay or 0.2, stop)  # a failing record must not spin
                    failed = False
                if failed:
                    await self._wait(0.5, stop)
        finally:
            await self.session.close()
            self.session = None

    async def _wait(self, delay: float, stop: asyncio.Event) -> None:
        waiters = {asyncio.ensure_future(self.wake.wait()), asyncio.ensure_future(stop.wait())}
        _, pending = await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
        for fut in pending:
            fut.cancel()
