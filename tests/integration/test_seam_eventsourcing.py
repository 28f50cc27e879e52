"""Contract test of `infra.compat.eventsourcing.postgres_pool` on the real PostgreSQL: the
library's PostgreSQL datastore still keeps a psycopg pool at `factory.datastore.pool`, giving
dict rows (what `infra.db.bound_sync_pool` relies on)."""

from __future__ import annotations

from psycopg_pool import ConnectionPool

from infra.compat.eventsourcing import postgres_pool
from infra.eventstore import EventStore
from infra.settings import Settings


def test_the_event_stores_pool_is_a_psycopg_pool_of_dict_rows(settings: Settings) -> None:
    store = EventStore(settings)
    try:
        pool = postgres_pool(store)
        assert isinstance(pool, ConnectionPool), "rework infra/compat/eventsourcing.py"
        with pool.connection() as conn, conn.cursor() as cur:
            cur.execute("SELECT 1 AS one")
            assert cur.fetchone() == {"one": 1}
    finally:
        store.close()
