"""The event store's recorder in memory, for tests: the library's POPO application recorder with
the contract of `infra.recorder.LinkFlowRecorder`, so that the command bus, the group commit and
the handlers can be tested without PostgreSQL (`EventStore(settings, memory=True)`).

Same contract as on PostgreSQL: `insert_events(events, reads={id: version})` writes nothing and
raises `StaleRead` if any of those aggregates has an event after that version (0: read as
missing); writes nothing and raises `EventTooLarge` when an event's stored state is longer than
`max_event_bytes`; writes nothing and raises the library's `IntegrityError` on a duplicate
(originator_id, originator_version); otherwise appends every event and returns their
notification ids in order. Checks and append run under the recorder's one lock, as they run
under the table lock in `linkflow_append_events`, in the same order (size, reads, duplicates).
The metadata travels as on PostgreSQL: `insert_events(..., metadata=[EventMetadata, ...])`
keeps each event's, and `select_metadata(ids)` reads them back by notification id.
`position_of(id)` is the notification id of the aggregate's latest event (0: none).

`MemoryFactory` (PERSISTENCE_MODULE `infra.memory_recorder:MemoryFactory`, set by
`infra.eventstore.eventsourcing_env(..., memory=True)`) builds it: the library's POPO factory
ignores APPLICATION_RECORDER_TOPIC.

For tests only: imported by `infra.eventstore` (by topic) and by tests; never by a process's
wiring (`gateways.bootstrap` needs the PostgreSQL datastore).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import ApplicationRecorder, StoredEvent
from eventsourcing.popo import POPOApplicationRecorder, POPOFactory
from eventsourcing.utils import resolve_topic

from infra.recorder import (
    DEFAULT_MAX_EVENT_BYTES,
    EventMetadata,
    StaleRead,
    metadata_arrays,
    refuse_too_large,
)

# The factory's environment key for the size backstop (what `EventStore` sets on a
# LinkFlowRecorder from the settings); looked up as LINKFLOW_RECORDER_MAX_EVENT_BYTES first.
MAX_EVENT_BYTES_KEY = "RECORDER_MAX_EVENT_BYTES"


class MemoryRecorder(POPOApplicationRecorder):
    # The longest stored state an append may hold (set from the settings by MemoryFactory).
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._metadata: dict[int, EventMetadata] = {}

    def insert_events(
        self,
        stored_events: Sequence[StoredEvent],
        *,
        reads: Mapping[UUID, int] | None = None,
        metadata: Sequence[EventMetadata] | None = None,
        **kwargs: Any,
    ) -> list[int]:
        if not stored_events:
            return []
        refuse_too_large(stored_events, self.max_event_bytes)
        metadata_arrays(len(stored_events), metadata)  # the same refusal of a wrong count
        with self._database_lock:
            stale = [
                aggregate_id
                for aggregate_id, version in (reads or {}).items()
                if self._latest_version(aggregate_id) > version
            ]
            if stale:
                raise StaleRead(stale)
            # Checks every event before it changes anything (IntegrityError), then appends.
            ids = self._insert_events(stored_events, **kwargs)
            for i, notification_id in enumerate(ids or ()):
                self._metadata[notification_id] = metadata[i] if metadata else EventMetadata()
        self._notify_listeners()
        return list(ids or ())

    def select_metadata(self, ids: Sequence[int]) -> dict[int, EventMetadata]:
        """The metadata recorded with these events (by notification id; absent ids left out)."""
        with self._database_lock:
            return {i: self._metadata[i] for i in ids if i in self._metadata}

    def position_of(self, originator_id: UUID) -> int:
        """The notification id of the aggregate's latest event (0: it has none)."""
        with self._database_lock:
            index = self._stored_events_index.get(str(originator_id))
            if not index:
                return 0
            return index[max(index)] + 1  # notification ids count from 1

    def _latest_version(self, originator_id: UUID) -> int:
        index = self._stored_events_index.get(str(originator_id))
        return max(index) if index else 0


class MemoryFactory(POPOFactory):
    """The library's POPO factory, building the application recorder APPLICATION_RECORDER_TOPIC
    names (MemoryRecorder by default) with the size limit of MAX_EVENT_BYTES_KEY."""

    def application_recorder(self) -> ApplicationRecorder:
        topic = self.env.get(self.APPLICATION_RECORDER_TOPIC)
        recorder_class: type[MemoryRecorder] = resolve_topic(topic) if topic else MemoryRecorder
        assert issubclass(recorder_class, MemoryRecorder), recorder_class
        recorder = recorder_class()
        limit = self.env.get(MAX_EVENT_BYTES_KEY)
        if limit:
            recorder.max_event_bytes = int(limit)
        return recorder
