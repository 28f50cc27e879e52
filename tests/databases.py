"""Databases of the tests' own: each migrated on creation and dropped after use."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from infra.schema import drop_database, migrate
from infra.settings import Settings


@contextmanager
def own_database(redis_url: str, **overrides: object) -> Iterator[Settings]:
    """Settings for a new database and key prefix, migrated; the database is dropped after."""
    run_id = uuid.uuid4().hex[:10]
    settings = Settings(
        pg_db=f"lf_test_{run_id}",
        redis_url=redis_url,
        redis_prefix=f"lftest:{run_id}:",
        allow_private_network=True,
        log_level="WARNING",
        **overrides,  # type: ignore[arg-type]
    )
    migrate(settings)
    try:
        yield settings
    finally:
        drop_database(settings)
