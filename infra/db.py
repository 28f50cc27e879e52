"""PostgreSQL access for async code: a psycopg 3 async connection pool and small query helpers.

Everything outside `domain/` may import this module.
"""

from __future__ import annotations

from typing import TypeAlias

from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

from infra.settings import Settings

# Every connection LinkFlow opens uses `row_factory=dict_row`: rows are dicts keyed by column.
DictConnection: TypeAlias = AsyncConnection[DictRow]
DictPool: TypeAlias = AsyncConnectionPool[DictConnection]


async def open_pool(settings: Settings, min_size: int = 1, max_size: int = 8) -> DictPool:
    pool: DictPool = AsyncConnectionPool(
        settings.conninfo,
        min_size=min_size,
        max_size=max_size,
        kwargs={"row_factory": dict_row, "autocommit": False},
        open=False,
    )
    await pool.open(wait=True, timeout=30)
    return pool


async def connect(settings: Settings, autocommit: bool = True) -> DictConnection:
    return await AsyncConnection.connect(
        settings.conninfo, autocommit=autocommit, row_factory=dict_row
    )
