"""Seam onto psycopg_pool (3.2, 3.3): adjusting a synchronous `ConnectionPool` that a library
built (the event store's, `eventsourcing.postgres`), whose settings do not reach these. Its
documented API takes them as constructor parameters only; these set what the constructor
stored, on attributes the pool reads each time it uses them. Contract tests:
tests/unit/test_compat_psycopg_pool.py (pure) and tests/integration/test_seam_psycopg_pool.py
(a checkout against a PostgreSQL).

- `set_connect_kwarg`: `pool.kwargs`, the dict of `connect()` arguments (read at each connect).
- `set_reconnect_timeout`: `pool.reconnect_timeout` (read at each reconnection attempt).
- `wrap_check`: `pool._check` (private), the `check` callback the pool calls on a connection
  before handing it out (`_check_connection`; None: no check). The public `check=` parameter
  (3.2+) would do, but only for a pool we construct; LinkFlow's own pool uses it
  (`infra.db.open_pool`).

Imported only by `infra.db`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias

from psycopg_pool import ConnectionPool

# A synchronous pool's `check` callback: raises if the connection is not fit to hand out.
Check: TypeAlias = Callable[[Any], None]


def set_connect_kwarg(pool: ConnectionPool[Any], name: str, value: Any) -> None:
    """Pass `name=value` to each new connection's `connect()` (a pool built with a `kwargs`
    dict; one built with a callable, 3.3, or none is left as it is)."""
    if isinstance(pool.kwargs, dict):
        pool.kwargs[name] = value


def set_reconnect_timeout(pool: ConnectionPool[Any], seconds: float) -> None:
    """How long a lost connection is retried before the pool gives up on that attempt."""
    pool.reconnect_timeout = seconds


def wrap_check(pool: ConnectionPool[Any], wrap: Callable[[Check], Check]) -> None:
    """Replace the pool's `check` callback with `wrap(check)`; a pool without one keeps none."""
    check: Check | None = pool._check
    if check is not None:
        pool._check = wrap(check)
