"""The `eventsourcing` library's internals LinkFlow relies on, and nothing else of them.

- `fastforward_lock`: the repository's per-aggregate lock (`Repository._use_fastforward_lock`
  / `_disuse_fastforward_lock`, 9.5), under which `Repository.get` applies new events to a
  cached aggregate. The event store copies and versions what it holds under it, so that no
  event is half-applied to what a command reads. The public API has no way to look at a cached
  aggregate without bringing it up to date (a query to PostgreSQL).
- `postgres_pool`: the psycopg pool of the library's PostgreSQL datastore
  (`Application.factory.datastore.pool`), which the wiring bounds (`infra.db`).

Contract tests: tests/unit/test_compat_eventsourcing.py (the names and their behaviour), and
tests/integration/test_seam_eventsourcing.py (the datastore's pool). Imported by
`infra.eventstore` and `gateways.bootstrap`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from eventsourcing.application import Application, Repository
from psycopg_pool import ConnectionPool


@contextmanager
def fastforward_lock(
    repository: Repository[Any], aggregate_id: Any, blocking: bool
) -> Iterator[bool]:
    """Hold the repository's fast-forward lock of the aggregate while the block runs; yields
    False (and holds nothing) if it is busy and not `blocking`."""
    lock = repository._use_fastforward_lock(aggregate_id)
    try:
        acquired = lock.acquire(blocking=blocking)
        try:
            yield acquired
        finally:
            if acquired:
                lock.release()
    finally:
        repository._disuse_fastforward_lock(aggregate_id)


def postgres_pool(app: Application[Any]) -> ConnectionPool[Any]:
    """The connection pool of an application stored in PostgreSQL."""
    pool: ConnectionPool[Any] = app.factory.datastore.pool  # type: ignore[attr-defined]
    return pool
