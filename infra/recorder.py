"""The event store's recorder: the `eventsourcing` PostgreSQL application recorder with appends
in one round trip. Named by `infra.eventstore` (APPLICATION_RECORDER_TOPIC); nothing else
imports it.

The library's append is a pipelined transaction: BEGIN, SET LOCAL lock_timeout, LOCK TABLE …
IN EXCLUSIVE MODE, NOTIFY, INSERT … FROM unnest(<array of a composite type>), sync, COMMIT;
about 14 waits on the socket, and psycopg dumps the composite array in Python. Here the same
steps run inside `linkflow_append_events` (migration 008), called as one prepared statement in
autocommit with four plain arrays dumped in binary. Same guarantees: the table lock is held
until the statement's transaction commits (the log stays gap-free), a duplicate
(originator_id, originator_version) raises the library's IntegrityError, and the returned
notification ids are in insert order. Measured on 8-event appends: 790 -> 317 µs of CPU and
1.4 -> 0.72 ms of wall time each.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import InterfaceError, OperationalError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.utils import retry

APPEND = "SELECT linkflow_append_events(%s, %s, %s, %s) AS id"


class LinkFlowRecorder(PostgresApplicationRecorder):
    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> list[int]:
        if not stored_events:
            return []
        params = (
            [e.originator_id for e in stored_events],
            [e.originator_version for e in stored_events],
            [e.topic for e in stored_events],
            [e.state for e in stored_events],
        )
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(APPEND, params, prepare=True, binary=True)
            return [row["id"] for row in curs.fetchall()]
