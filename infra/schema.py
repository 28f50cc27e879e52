"""Schema management: creates the database, the event store table and applies `migrations/*.sql`
in order, each once (recorded in `schema_migrations`). Used by `linkflow migrate` and the tests.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
from psycopg import sql

from infra.eventstore import EventStore
from infra.settings import Settings

MIGRATIONS = Path(__file__).with_name("migrations")


def create_database(settings: Settings) -> bool:
    """Create the database if it is missing; True when it was created."""
    with psycopg.connect(settings.conninfo_for("postgres"), autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (settings.pg_db,)
        ).fetchone()
        if exists:
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(settings.pg_db)))
        return True


def drop_database(settings: Settings) -> None:
    with psycopg.connect(settings.conninfo_for("postgres"), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(settings.pg_db)
            )
        )


def migrate(settings: Settings) -> list[str]:
    """Bring the schema up to date; returns the names of the migrations applied now."""
    create_database(settings)
    EventStore(settings, create_table=True).close()
    applied: list[str] = []
    with psycopg.connect(settings.conninfo) as conn:
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('linkflow:migrate'))")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row[0] for row in conn.execute("SELECT name FROM schema_migrations")}
        for path in sorted(MIGRATIONS.glob("*.sql")):
            if path.name in done:
                continue
            conn.execute(path.read_text())  # type: ignore[arg-type]
            conn.execute("INSERT INTO schema_migrations (name) VALUES (%s)", (path.name,))
            applied.append(path.name)
        conn.commit()
    return applied
