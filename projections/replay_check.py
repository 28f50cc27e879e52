"""`linkflow replay check`, its read-model half: rebuild every read model from the log into
scratch tables and diff them with the live ones, row by row and column by column.

How it stays off the live system: one REPEATABLE READ transaction reads the projector's
position P and copies the live read models (`live__<table>`) into a scratch schema
(`replay_check_<random>`), so the copy is exactly what the projector had made of events 1..P
(it commits its rows and its position together). Scratch tables `<table>` are made `LIKE` the
live ones (`INCLUDING ALL`: indexes, defaults, generated columns), and the live tables'
triggers (the statistics rollups of migrations 013/015) are created again on them. The
projector's own code (`projections.visibility.project`) then folds events 1..P into them on a
connection whose `search_path` puts the scratch schema first: the projector's SQL and the
rollup trigger functions name their tables unqualified, so they resolve to the scratch tables
(the trigger functions themselves, and the session's temporary pending table, stay where they
are). Nothing is written outside the scratch schema; `drop_scratch` removes it.

Imported by `gateways.replay_cli` and the tests.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from eventsourcing.persistence import MapperDeserialisationError
from eventsourcing.utils import get_topic
from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row

from infra.db import DictConnection
from infra.eventlog import LoggedEvent, head_position, read_log
from infra.eventstore import EventStore
from infra.settings import Settings
from projections import refold
from projections.visibility import READ_MODEL_TABLES, VisibilityProjector, project

SCHEMA_PREFIX = "replay_check_"
LIVE_PREFIX = "live__"
MISSING = "(no row)"

Progress = Callable[[int], None]


@dataclass(frozen=True)
class Difference:
    """One column of one row that the live read model and the rebuild disagree on. A row only
    one side has is one Difference with column `*` and MISSING on the other side."""

    table: str
    key: dict[str, Any]
    column: str
    live: Any
    rebuilt: Any

    def describe(self) -> str:
        key = ", ".join(f"{k}={v}" for k, v in self.key.items())
        return (
            f"{self.table} [{key}] {self.column}: live {_show(self.live)}"
            f" != rebuilt {_show(self.rebuilt)}"
        )


@dataclass
class TableReport:
    table: str
    live_rows: int = 0
    rebuilt_rows: int = 0
    differing_rows: int = 0
    differences: list[Difference] = field(default_factory=list)


@dataclass
class ReadModelReport:
    """What the rebuild found: per table, and the positions it compared at."""

    position: int  # the live projector's position: events 1..position were rebuilt
    head: int  # the log's head when the check started
    events: int = 0  # events read from the log
    undecodable: list[tuple[int, str, str]] = field(default_factory=list)  # position, topic, why
    tables: list[TableReport] = field(default_factory=list)

    @property
    def differing_rows(self) -> int:
        return sum(t.differing_rows for t in self.tables)


def _show(value: Any) -> str:
    if value == MISSING:
        return MISSING
    return json.dumps(value, sort_keys=True, default=str)


def column_differences(
    table: str, key_columns: Sequence[str], live: Mapping[str, Any] | None,
    rebuilt: Mapping[str, Any] | None,
) -> list[Difference]:  # fmt: skip
    """The differences between one row's two versions (as JSON objects; None: no such row),
    column by column in the row's order. Pure."""
    some = live if live is not None else rebuilt
    if some is None:
        return []
    key = {k: some.get(k) for k in key_columns}
    if live is None or rebuilt is None:
        return [
            Difference(
                table,
                key,
                "*",
                MISSING if live is None else dict(live),
                MISSING if rebuilt is None else dict(rebuilt),
            )
        ]
    columns = list(live) + [c for c in rebuilt if c not in live]
    return [
        Difference(table, key, c, live.get(c), rebuilt.get(c))
        for c in columns
        if live.get(c) != rebuilt.get(c)
    ]


async def connect(settings: Settings) -> DictConnection:
    """A connection of the check's own (autocommit: each transaction is explicit)."""
    conn: DictConnection = await AsyncConnection.connect(
        settings.conninfo,
        row_factory=dict_row,
        autocommit=True,
        connect_timeout=settings.pg_connect_timeout,
    )
    return conn


def new_schema_name() -> str:
    return SCHEMA_PREFIX + secrets.token_hex(4)


async def drop_scratch(settings: Settings, schema: str) -> None:
    """Remove the scratch schema (on a connection of its own: the check's may be broken)."""
    conn = await connect(settings)
    try:
        await conn.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
        )
    finally:
        await conn.close()


async def _key_columns(conn: DictConnection, table: str) -> list[str]:
    cur = await conn.execute(
        "SELECT a.attname FROM pg_index i"
        " JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n) ON true"
        " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum"
        " WHERE i.indrelid = %s::regclass AND i.indisprimary ORDER BY k.n",
        (f"public.{table}",),
    )
    columns = [row["attname"] for row in await cur.fetchall()]
    if not columns:
        raise RuntimeError(f"read model {table} has no primary key to compare rows by")
    return columns


async def _copy_triggers(conn: DictConnection, schema: str, table: str) -> int:
    """Create the live table's triggers again on its scratch copy (same functions)."""
    await conn.execute("SET LOCAL search_path TO pg_catalog")  # so the definitions qualify names
    cur = await conn.execute(
        "SELECT tgname, pg_get_triggerdef(oid) AS def FROM pg_trigger"
        " WHERE tgrelid = %s::regclass AND NOT tgisinternal ORDER BY tgname",
        (f"public.{table}",),
    )
    rows = await cur.fetchall()
    for row in rows:
        live_on = f" ON public.{table} "
        definition: str = row["def"]
        if definition.count(live_on) != 1:
            raise RuntimeError(f"cannot copy trigger {row['tgname']} of {table}: {definition}")
        scratch_on = f" ON {sql.Identifier(schema).as_string(conn)}.{table} "
        await conn.execute(definition.replace(live_on, scratch_on).encode())
    await conn.execute("SET LOCAL search_path TO public")
    return len(rows)


async def prepare_scratch(
    conn: DictConnection, schema: str, tables: Sequence[str] = READ_MODEL_TABLES
) -> ReadModelReport:
    """In one REPEATABLE READ snapshot: read the projector's position and the log head, create
    the scratch schema with empty copies of the read models (and their triggers), and copy the
    live rows as they are at that position."""
    s = sql.Identifier(schema)
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        cur = await conn.execute(
            "SELECT position FROM consumer_positions WHERE consumer = %s",
            (VisibilityProjector.name,),
        )
        row = await cur.fetchone()
        position = int(row["position"]) if row else 0
        report = ReadModelReport(position=position, head=await head_position(conn))
        await conn.execute(sql.SQL("CREATE SCHEMA {}").format(s))
        for table in tables:
            t, live = sql.Identifier(table), sql.Identifier(LIVE_PREFIX + table)
            await conn.execute(
                sql.SQL("CREATE TABLE {s}.{t} (LIKE public.{t} INCLUDING ALL)").format(s=s, t=t)
            )
            await _copy_triggers(conn, schema, table)
            await conn.execute(
                sql.SQL("CREATE TABLE {s}.{live} AS SELECT * FROM public.{t}").format(
                    s=s, live=live, t=t
                )
            )
    return report


def _decoded(
    store: EventStore, events: Iterable[LoggedEvent], topics: frozenset[str],
    report: ReadModelReport,
) -> list[tuple[LoggedEvent, Any]]:  # fmt: skip
    """The events the projector looks at, decoded; one that cannot be decoded is skipped as the
    live projector skips it (infra.consumer), and noted."""
    decoded = []
    for e in events:
        if e.topic not in topics:
            continue
        try:
            decoded.append(
                (e, store.decode(e.originator_id, e.originator_version, e.topic, e.state))
            )
        except MapperDeserialisationError as exc:
            report.undecodable.append((e.position, e.topic, str(exc)[:200]))
    return decoded


async def rebuild(
    conn: DictConnection, store: EventStore, schema: str, report: ReadModelReport,
    page: int = 1000, progress: Progress | None = None,
) -> None:  # fmt: skip
    """Fold events 1..report.position into the scratch tables with the projector's own code,
    one transaction per page (the rollups' flush runs at each commit, as live)."""
    topics = frozenset(get_topic(cls) for cls in VisibilityProjector.handles)
    await conn.execute(sql.SQL("SET search_path TO {}, public").format(sql.Identifier(schema)))
    after = 0
    while after < report.position:
        async with conn.transaction():
            events = await read_log(conn, after, page, upto=report.position)
            if not events:
                break
            await project(conn, _decoded(store, events, topics, report))
        after = events[-1].position
        report.events += len(events)
        if progress is not None:
            progress(len(events))
    await conn.execute("SET search_path TO public")


async def diff(
    conn: DictConnection, schema: str, report: ReadModelReport,
    tables: Sequence[str] = READ_MODEL_TABLES, max_rows: int = 1000,
) -> None:  # fmt: skip
    """Compare each live copy with its rebuild, row by row (by primary key) and, for the rows
    that differ, column by column; at most `max_rows` differing rows per table are detailed
    (all are counted)."""
    s = sql.Identifier(schema)
    for table in tables:
        keys = await _key_columns(conn, table)
        live, rebuilt = sql.Identifier(LIVE_PREFIX + table), sql.Identifier(table)
        on = sql.SQL(" AND ").join(
            sql.SQL("l.{k} = r.{k}").format(k=sql.Identifier(k)) for k in keys
        )
        order = sql.SQL(", ").join(
            sql.SQL("coalesce(l.{k}, r.{k})").format(k=sql.Identifier(k)) for k in keys
        )
        joined = sql.SQL(
            "FROM {s}.{live} l FULL JOIN {s}.{rebuilt} r ON {on}"
            " WHERE to_jsonb(l) IS DISTINCT FROM to_jsonb(r)"
        ).format(s=s, live=live, rebuilt=rebuilt, on=on)
        entry = TableReport(table)
        cur = await conn.execute(
            sql.SQL(
                "SELECT (SELECT count(*) FROM {s}.{live}) AS live,"
                " (SELECT count(*) FROM {s}.{rebuilt}) AS rebuilt,"
                " (SELECT count(*) {joined}) AS differing"
            ).format(s=s, live=live, rebuilt=rebuilt, joined=joined)
        )
        counts = await cur.fetchone()
        assert counts is not None
        entry.live_rows, entry.rebuilt_rows = counts["live"], counts["rebuilt"]
        entry.differing_rows = counts["differing"]
        if entry.differing_rows:
            cur = await conn.execute(
                sql.SQL(
                    "SELECT to_jsonb(l) AS live, to_jsonb(r) AS rebuilt {joined}"
                    " ORDER BY {order} LIMIT %s"
                ).format(joined=joined, order=order),
                (max_rows,),
            )
            for row in await cur.fetchall():
                entry.differences.extend(
                    column_differences(table, keys, row["live"], row["rebuilt"])
                )
        report.tables.append(entry)


@dataclass
class CheckReport:
    schema: str
    read_models: ReadModelReport
    aggregates: refold.AggregateReport

    @property
    def ok(self) -> bool:
        return not (
            self.read_models.differing_rows
            or self.read_models.undecodable
            or self.aggregates.failures
        )


Bars = Callable[[str, int], Progress]


async def check(
    settings: Settings, store: EventStore, bars: Bars | None = None, page: int = 1000,
    max_rows: int = 1000,
) -> CheckReport:  # fmt: skip
    """The whole check: the read models rebuilt and diffed (this module), then every aggregate
    re-folded (`projections.refold`). `bars(label, total)` gives a progress callback per stage.
    The scratch schema is always dropped."""
    schema = new_schema_name()
    conn = await connect(settings)
    try:
        models = await prepare_scratch(conn, schema)
        progress = bars("rebuild read models", models.position) if bars else None
        await rebuild(conn, store, schema, models, page, progress)
        await diff(conn, schema, models, max_rows=max_rows)
        aggregates = refold.AggregateReport(head=models.head)
        progress = bars("re-fold aggregates", models.head) if bars else None
        async for groups in refold.aggregate_pages(conn, models.head, page):
            folded = await asyncio.to_thread(_refold_all, store, groups, aggregates)
            # Check 3 for the aggregates the live projector has applied all of.
            applied = [a for a, last in folded if last <= models.position]
            await refold.compare_read_models(conn, schema, applied, aggregates)
            events = sum(len(g) for g in groups)
            aggregates.events += events
            if progress is not None:
                progress(events)
        return CheckReport(schema, models, aggregates)
    finally:
        await conn.close()
        await drop_scratch(settings, schema)


def _refold_all(
    store: EventStore, groups: list[list[LoggedEvent]], report: refold.AggregateReport
) -> list[tuple[Any, int]]:
    """Checks 1 and 2 for a page of aggregates; the folded ones with their last position."""
    folded = []
    for events in groups:
        aggregate, failure = refold.refold(store, events)
        kind = failure.aggregate_type if failure else type(aggregate).__name__
        report.per_type[kind] = report.per_type.get(kind, 0) + 1
        if failure is not None:
            report.failures.append(failure)
        else:
            folded.append((aggregate, max(e.position for e in events)))
    return folded
