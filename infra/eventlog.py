"""Reading the event store's notification log from async code, and consumer positions.

The log (`linkflow_events`, ordered by notification id, gap-free in commit order thanks to the
recorder's table lock) is the truth every consumer catches up from. Used by the relay and the
event consumers; everything outside `domain/` may import it.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import NamedTuple
from uuid import UUID

from infra.db import DictConnection
from infra.eventstore import EVENTS_TABLE


class LoggedEvent(NamedTuple):
    """One stored event with its position, as read from the log or from a stream entry."""

    position: int
    originator_id: UUID
    originator_version: int
    topic: str
    state: bytes


# An `events` stream entry carries a run of consecutive events, packed: fields `first` and
# `last` (positions, as decimal text) and `events`, where each event is a fixed header
# (position, originator version, originator id, topic length, state length) then its topic
# (UTF-8) and its state (the stored bytes, as the event store holds them).
_HEADER = struct.Struct(">qq16sHI")
_TOPICS: dict[bytes, str] = {}


def pack(events: Sequence[LoggedEvent]) -> dict[str, bytes]:
    """One stream entry's fields for `events` (consecutive positions, in order)."""
    parts: list[bytes] = []
    for e in events:
        topic = e.topic.encode()
        parts.append(
            _HEADER.pack(
                e.position, e.originator_version, e.originator_id.bytes, len(topic), len(e.state)
            )
        )
        parts.append(topic)
        parts.append(e.state)
    return {
        "first": str(events[0].position).encode(),
        "last": str(events[-1].position).encode(),
        "events": b"".join(parts),
    }


def unpack(fields: dict[bytes, bytes]) -> list[LoggedEvent]:
    """The events of one stream entry; ValueError if the entry is not a well-formed pack."""
    try:
        data = memoryview(fields[b"events"])
        first, last = int(fields[b"first"]), int(fields[b"last"])
    except (KeyError, TypeError) as exc:
        raise ValueError(f"not an events entry: {exc}") from exc
    events: list[LoggedEvent] = []
    offset, end, size = 0, len(data), _HEADER.size
    try:
        while offset < end:
            position, version, oid, topic_len, state_len = _HEADER.unpack_from(data, offset)
            offset += size
            raw_topic = bytes(data[offset : offset + topic_len])
            offset += topic_len
            state = bytes(data[offset : offset + state_len])
            offset += state_len
            topic = _TOPICS.get(raw_topic)
            if topic is None:
                topic = raw_topic.decode()
                if len(_TOPICS) < 10_000:
                    _TOPICS[raw_topic] = topic
            events.append(LoggedEvent(position, UUID(bytes=oid), version, topic, state))
    except struct.error as exc:
        raise ValueError(f"truncated events entry: {exc}") from exc
    if offset != end or not events or events[0].position != first or events[-1].position != last:
        raise ValueError("events entry does not match its first/last positions")
    return events


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
