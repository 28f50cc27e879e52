"""Contract of `infra.compat.psycopg_pool`: the attributes of a synchronous psycopg_pool
`ConnectionPool` that `infra.db.bound_sync_pool` sets on the event store's pool after the fact.
A psycopg_pool (or psycopg) upgrade that changes any of them fails here, saying which seam
broke. No server: connections go to a class of ours that refuses them. A checkout through the
wrapped check against a real PostgreSQL: tests/integration/test_seam_psycopg_pool.py.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from infra.compat.psycopg_pool import Check, set_connect_kwarg, set_reconnect_timeout, wrap_check


def broke(seam: str, change: str) -> str:
    return (
        f"psycopg_pool changed {change}: the seam `{seam}` in infra/compat/psycopg_pool.py "
        "(used by infra/db.py bound_sync_pool, on the event store's pool) must be redone"
    )


class Refused(psycopg.Connection[Any]):
    """Connections that are never made; `connect` notes what it was asked."""

    asked: list[dict[str, Any]] = []

    @classmethod
    def connect(cls, conninfo: str = "", **kwargs: Any) -> Any:  # type: ignore[override]
        cls.asked.append(kwargs)
        raise psycopg.OperationalError("refused (test)")


def test_each_connect_gets_the_kwargs_dict_as_it_is_now_and_gives_up_after_the_timeout() -> None:
    gave_up = threading.Event()
    pool: ConnectionPool[Any] = ConnectionPool(
        "",
        connection_class=Refused,
        kwargs={"autocommit": False},
        min_size=1,
        open=False,
        reconnect_failed=lambda _: gave_up.set(),
    )
    set_connect_kwarg(pool, "connect_timeout", 7)
    set_reconnect_timeout(pool, 0.2)  # the constructor's default: 5 minutes
    Refused.asked.clear()
    began = time.monotonic()
    pool.open(wait=False)
    try:
        assert gave_up.wait(10), broke("set_reconnect_timeout", "`reconnect_timeout`")
        assert time.monotonic() - began < 5, broke("set_reconnect_timeout", "`reconnect_timeout`")
    finally:
        pool.close()
    assert Refused.asked, broke("set_connect_kwarg", "how a pool connects (connection_class)")
    wanted = {"autocommit": False, "connect_timeout": 7}
    assert all(kwargs == wanted for kwargs in Refused.asked), broke(
        "set_connect_kwarg", "`kwargs`, the dict of connect() arguments"
    )


def test_the_check_callback_is_kept_in_check_and_called_before_a_checkout() -> None:
    def check(conn: Any) -> None:
        raise psycopg.OperationalError(f"{conn} is dead")

    pool: ConnectionPool[Any] = ConnectionPool("", open=False, check=check)
    assert getattr(pool, "_check", None) is check, broke("wrap_check", "where `check` is kept")
    assert ConnectionPool("", open=False)._check is None, broke("wrap_check", "no `check`")

    seen: list[Any] = []

    def wrap(inner: Check) -> Check:
        def wrapped(conn: Any) -> None:
            seen.append(conn)
            inner(conn)

        return wrapped

    wrap_check(pool, wrap)
    conn = object()
    try:
        pool._check_connection(conn)  # what a checkout calls on the connection it takes
    except psycopg.OperationalError:
        pass
    else:
        raise AssertionError(broke("wrap_check", "a failed check no longer raises"))
    assert seen == [conn], broke("wrap_check", "the check a checkout calls (`_check_connection`)")


def test_a_pool_without_a_check_keeps_none() -> None:
    pool: ConnectionPool[Any] = ConnectionPool("", open=False)
    wrap_check(pool, lambda check: check)
    assert pool._check is None, broke("wrap_check", "no `check`")


def test_connections_take_an_attribute_of_ours() -> None:
    """`infra.db._recently_handed_out` stamps each checked connection with the time it was
    handed out (`_linkflow_handed_out`): psycopg's connections must keep an instance dict."""
    for cls in (psycopg.Connection, psycopg.AsyncConnection):
        assert cls.__dictoffset__ != 0, (
            f"psycopg's {cls.__name__} no longer takes attributes of ours (`__slots__`): "
            "infra/db.py `_recently_handed_out` (the check's bypass window) must keep its "
            "stamps elsewhere"
        )
