"""Contract of `infra.compat.psycopg_pool` against a real PostgreSQL: a checkout from a
synchronous pool built as the event store's (`eventsourcing.postgres`, pre-ping on) goes through
the check `wrap_check` put in place (the pure part: tests/unit/test_compat_psycopg_pool.py).
"""

from __future__ import annotations

from typing import Any

from psycopg_pool import ConnectionPool

from infra.compat.psycopg_pool import Check, wrap_check
from infra.settings import Settings


def test_each_checkout_goes_through_the_wrapped_check(settings: Settings) -> None:
    checked: list[Any] = []

    def counted(check: Check) -> Check:
        def wrapped(conn: Any) -> None:
            checked.append(conn)
            check(conn)

        return wrapped

    pool: ConnectionPool[Any] = ConnectionPool(
        settings.conninfo, min_size=1, open=False, check=ConnectionPool.check_connection
    )
    wrap_check(pool, counted)
    with pool:
        for _ in range(2):
            with pool.connection() as conn:
                conn.execute("SELECT 1")
    assert len(checked) == 2, (
        "psycopg_pool changed how a checkout checks a connection: the seam `wrap_check` in "
        "infra/compat/psycopg_pool.py (used by infra/db.py bound_sync_pool) must be redone"
    )
