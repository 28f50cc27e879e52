"""Reading the event store's notification log from async code, and consumer positions.

The log (`linkflow_events`, ordered by notification id, gap-free in commit order thanks to the
recorder's table lock) is the truth every consumer catches up from. Used by the relay and the
event consumers; everything outside `domain/` may import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from infra.db import DictConnection
from infra.eventstore import EVENTS_TABLE


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    """One stored event with its position, as read from the log or from a stream message."""

    position: int
    originator_id: UUID
    originator_version: int
    topic: str
    state: bytes

    def to_fields(self) -> dict[str, str | bytes]:
        return {
            "pos": str(self.position),
            "oid": str(self.originator_id),
            "ver": str(self.originator_version),
            "topic": self.topic,
            "state": self.state,
        }

    @classmethod
    def from_fields(cls, fields: dict[bytes, bytes]) -> LoggedEvent:
        return cls(
            position=int(fields[b"pos"]),
            originator_id=UUID(fields[b"oid"].decode()),
            originator_version=int(fields[b"ver"]),
            topic=fields[b"topic"].decode(),
            state=bytes(fields[b"state"]),
        )


async def read_log(
    conn: DictConnection, after: int, limit: int, upto: int | None = None
) -> list[LoggedEvent]:
    """Events with after < position (<= upto), in order."""
    query = (
        f"SELECT notification_id, originator_id, originator_version, topic, state"
        f" FROM {EVENTS_TABLE} WHERE notification_id > %s"
    )
    params: list[object] = [after]
    if upto is not None:
        query += " AND notification_id <= %s"
        params.append(upto)
    query += " ORDER BY notification_id LIMIT %s"
    params.append(limit)
    cur = await conn.execute(query, params)  # type: ignore[arg-type]
    rows = await cur.fetchall()
    return [
        LoggedEvent(
            position=row["notification_id"],
            originator_id=row["originator_id"],
            originator_version=row["originator_version"],
            topic=row["topic"],
            state=bytes(row["state"]),
        )
        for row in rows
    ]


async def head_position(conn: DictConnection) -> int:
    cur = await conn.execute(f"SELECT coalesce(max(notification_id), 0) AS p FROM {EVENTS_TABLE}")
    row = await cur.fetchone()
    return int(row["p"]) if row else 0


async def load_position(conn: DictConnection, consumer: str) -> int:
    await conn.execute(
        "INSERT INTO consumer_positions (consumer, position) VALUES (%s, 0)"
        " ON CONFLICT (consumer) DO NOTHING",
        (consumer,),
    )
    cur = await conn.execute(
        "SELECT position FROM consumer_positions WHERE consumer = %s", (consumer,)
    )
    row = await cur.fetchone()
    return int(row["position"]) if row else 0


async def advance_position(conn: DictConnection, consumer: str, old: int, new: int) -> bool:
    """Move a position forward, guarded: False when another process moved it first."""
    cur = await conn.execute(
        "UPDATE consumer_positions SET position = %s, updated_at = now()"
        " WHERE consumer = %s AND position = %s",
        (new, consumer, old),
    )
    return cur.rowcount == 1
