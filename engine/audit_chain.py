"""The `audit` consumer: extends each workspace's hash chain (`audit_chain`, migration 018) with
every event of the log, and signs checkpoints of the chain heads that moved (`audit_checkpoints`).
The canonical form and the chain are `domain.audit_chain`; the signed message is
`domain.audit_signing`; docs/audit.md documents both for auditors.

Like the other event consumers it is single-active, catches up from the event store (after a
Redis flush, a gap, an idle second with the log ahead), and commits its rows with its position
in one transaction. It chains the rows as `linkflow_events` holds them (read again by position
range in that transaction: stream entries carry no actor or request id), so the chain is what
`linkflow audit verify` recomputes from the table. A redelivered event is never chained twice:
positions at or below the consumer's position are skipped by the base class, and an event at or
below its workspace's recorded head is skipped here. Chain heads not in memory are read from
`audit_chain`'s last row of the workspace.

Checkpoints: every `LINKFLOW_AUDIT_CHECKPOINT_S` the heads that moved since the last pass are
signed (Ed25519, `infra.audit_keys`), and the log position up to which every head is signed is
kept as the position of `audit_checkpoints` in `consumer_positions`, so that a restart signs
what the previous process chained but did not sign. Imported by `gateways.roles`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from faststream.redis import RedisBroker
from prometheus_client import Counter
from redis.asyncio import Redis

from domain.audit_chain import GENESIS, chain_event, link
from domain.audit_signing import SigningKey, checkpoint_message
from infra.audit_keys import register_key
from infra.consumer import EventConsumer
from infra.db import DictConnection, DictPool
from infra.eventlog import LoggedEvent
from infra.eventstore import EVENTS_TABLE, EventStore
from infra.logging import get_logger, log_event
from infra.outages import OUTAGES

log = get_logger(__name__)

CHECKPOINT_MARKER = "audit_checkpoints"
# Workspace heads kept in memory; past it the map is emptied and heads are read again as needed.
MAX_HEADS = 100_000

_ROWS = (
    "SELECT notification_id, originator_id::text AS aggregate_id, originator_version, topic,"
    f" state, actor::text AS actor, request_id FROM {EVENTS_TABLE}"
    " WHERE notification_id > %s AND notification_id <= %s ORDER BY notification_id"
)
_HEADS = (
    "SELECT w.ws::text AS workspace_id, c.position, c.hash FROM unnest(%s::uuid[]) AS w(ws)"
    " LEFT JOIN LATERAL (SELECT position, hash FROM audit_chain WHERE workspace_id = w.ws"
    " ORDER BY position DESC LIMIT 1) c ON true"
)
_INSERT = (
    "INSERT INTO audit_chain (position, workspace_id, hash)"
    " SELECT * FROM unnest(%s::bigint[], %s::uuid[], %s::bytea[])"
)

Clock = Callable[[], datetime]

CHECKPOINTS_SIGNED = Counter(
    "linkflow_audit_checkpoints_total", "Checkpoints of workspace chain heads signed"
)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class AuditChain(EventConsumer):
    name = "audit"
    page = 1000
    # Nothing waits on the chain: let entries gather into fewer transactions.
    linger_ms = 20

    def __init__(
        self,
        key: SigningKey,
        store: EventStore,
        pool: DictPool,
        redis: Redis,
        broker: RedisBroker,
        stream: str,
        clock: Clock = _utc_now,
    ) -> None:
        super().__init__(store, pool, redis, broker, stream)
        self.key = key
        self.clock = clock
        # workspace -> (position, hash) of its chain's last event, as committed.
        self.heads: dict[str, tuple[int, bytes]] = {}
        # Heads chained since the last checkpoint pass (signed by the next one).
        self.unsigned: dict[str, tuple[int, bytes]] = {}
        self._pending: dict[str, tuple[int, bytes]] = {}

    def decode_batch(self, events: list[LoggedEvent]) -> list[tuple[LoggedEvent, Any]]:
        # Every event is chained, from its stored bytes: nothing to decode.
        return [(e, None) for e in events]

    async def prepare_state(self) -> None:
        """Forget the heads (read again as needed) and find the heads no checkpoint covers."""
        self.heads.clear()
        async with self.pool.connection() as conn:
            await register_key(conn, self.key)
            cur = await conn.execute(
                "SELECT coalesce(max(position), 0) AS p FROM consumer_positions"
                " WHERE consumer = %s",
                (CHECKPOINT_MARKER,),
            )
            row = await cur.fetchone()
            signed_upto = int(row["p"]) if row else 0
            cur = await conn.execute(
                "SELECT DISTINCT ON (workspace_id) workspace_id::text AS ws, position, hash"
                " FROM audit_chain WHERE position > %s ORDER BY workspace_id, position DESC",
                (signed_upto,),
            )
            self.unsigned = {
                r["ws"]: (int(r["position"]), bytes(r["hash"])) for r in await cur.fetchall()
            }
            await conn.commit()

    async def apply(self, conn: DictConnection, events: list[tuple[LoggedEvent, Any]]) -> None:
        cur = await conn.execute(_ROWS, (self.position, events[-1][0].position))
        chained = [
            chain_event(
                r["notification_id"],
                r["aggregate_id"],
                r["originator_version"],
                r["topic"],
                bytes(r["state"]),
                r["actor"],
                r["request_id"],
            )
            for r in await cur.fetchall()
        ]
        heads = await self._heads(conn, {e.workspace_id for e in chained})
        positions: list[int] = []
        workspaces: list[UUID] = []
        hashes: list[bytes] = []
        for e in chained:
            head_position, head = heads.get(e.workspace_id, (0, GENESIS))
            if e.position <= head_position:
                continue  # already chained (a redelivery)
            head = link(head, e)
            heads[e.workspace_id] = (e.position, head)
            positions.append(e.position)
            workspaces.append(UUID(e.workspace_id))
            hashes.append(head)
        if positions:
            await conn.execute(_INSERT, (positions, workspaces, hashes))
        self._pending = {ws: heads[ws] for ws in {str(w) for w in workspaces}}

    async def _heads(
        self, conn: DictConnection, workspaces: set[str]
    ) -> dict[str, tuple[int, bytes]]:
        heads = {ws: self.heads[ws] for ws in workspaces if ws in self.heads}
        missing = [UUID(ws) for ws in workspaces if ws not in heads]
        if missing:
            cur = await conn.execute(_HEADS, (missing,))
            for r in await cur.fetchall():
                if r["position"] is not None:
                    heads[r["workspace_id"]] = (int(r["position"]), bytes(r["hash"]))
        return heads

    async def after_commit(self, events: list[tuple[LoggedEvent, Any]]) -> None:
        if len(self.heads) > MAX_HEADS:
            self.heads.clear()
        self.heads.update(self._pending)
        self.unsigned.update(self._pending)
        self._pending = {}

    async def checkpoint(self) -> int:
        """Sign the heads that moved since the last pass; returns how many were signed."""
        async with self.lock:
            unsigned, self.unsigned = self.unsigned, {}
            upto = self.position
        signed_at = self.clock()
        rows = [
            (
                ws,
                position,
                head,
                signed_at,
                self.key.key_id,
                self.key.sign(checkpoint_message(ws, position, head, signed_at)),
            )
            for ws, (position, head) in unsigned.items()
        ]
        try:
            async with self.pool.connection() as conn:
                async with conn.transaction():
                    async with conn.cursor() as cur:
                        await cur.executemany(
                            "INSERT INTO audit_checkpoints (workspace_id, position, chain_hash,"
                            " signed_at, key_id, signature) VALUES (%s, %s, %s, %s, %s, %s)"
                            " ON CONFLICT DO NOTHING",
                            rows,
                        )
                    await conn.execute(
                        "INSERT INTO consumer_positions (consumer, position) VALUES (%s, %s)"
                        " ON CONFLICT (consumer) DO UPDATE SET position ="
                        " greatest(consumer_positions.position, excluded.position),"
                        " updated_at = now()",
                        (CHECKPOINT_MARKER, upto),
                    )
        except BaseException:
            # Not signed: sign them with the next pass (newer heads win).
            self.unsigned = unsigned | self.unsigned
            raise
        if rows:
            CHECKPOINTS_SIGNED.inc(len(rows))
            log_event(log, "audit_checkpoints_signed", workspaces=len(rows), position=upto)
        return len(rows)

    async def checkpoint_loop(self, stop: asyncio.Event, every_s: float) -> None:
        """Sign moved heads every `every_s` seconds, and once more when stopping."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=every_s)
            with OUTAGES.guard("audit checkpoint failed", logger=log):
                await self.checkpoint()
