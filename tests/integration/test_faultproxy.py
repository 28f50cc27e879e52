"""The fault proxy the outage tests put in front of PostgreSQL: it forwards, `cut()` breaks open
connections and refuses new ones, `cut(hang=True)` leaves new ones unanswered, `restore()` ends
the outage on the same port."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import psycopg
import pytest
from faultproxy import FaultProxy

from infra.settings import Settings


def _connect(settings: Settings, port: int, timeout: int = 5) -> psycopg.Connection:
    proxied = settings.model_copy(update={"pg_port": port})
    return psycopg.connect(proxied.conninfo, autocommit=True, connect_timeout=timeout)


def _select_one(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT 1").fetchone()
    assert row is not None
    return int(row[0])


def test_forwards_then_cuts_then_restores(settings: Settings) -> None:
    with FaultProxy(settings.pg_host, settings.pg_port) as proxy:
        conn = _connect(settings, proxy.port)
        assert _select_one(conn) == 1
        assert proxy.open_connections == 1

        proxy.cut()
        with pytest.raises(psycopg.OperationalError):
            _select_one(conn)  # the open connection is gone
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError):
            _connect(settings, proxy.port)  # and new ones are refused at once
        assert time.monotonic() - started < 1.0
        assert proxy.open_connections == 0

        proxy.restore()
        port = proxy.port
        with _connect(settings, proxy.port) as again:
            assert _select_one(again) == 1
        assert proxy.port == port
        conn.close()


def test_a_hanging_cut_leaves_connects_unanswered(settings: Settings) -> None:
    with FaultProxy(settings.pg_host, settings.pg_port) as proxy:
        proxy.cut(hang=True)
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError):
            _connect(settings, proxy.port, timeout=1)
        assert time.monotonic() - started >= 0.9  # waited for the connect timeout
        proxy.restore()
        with _connect(settings, proxy.port) as conn:
            assert _select_one(conn) == 1


def test_a_frozen_cut_keeps_connections_open_and_silent(settings: Settings) -> None:
    with FaultProxy(settings.pg_host, settings.pg_port) as proxy, ThreadPoolExecutor(1) as pool:
        conn = _connect(settings, proxy.port)
        proxy.cut(freeze=True)
        query = pool.submit(_select_one, conn)
        with pytest.raises(FutureTimeout):
            query.result(timeout=1.0)  # no answer, no error: a partition
        assert proxy.open_connections == 1
        proxy.restore()  # drops what the cut held: the query fails now
        with pytest.raises(psycopg.OperationalError):
            query.result(timeout=5.0)
        with _connect(settings, proxy.port) as again:
            assert _select_one(again) == 1
        conn.close()
