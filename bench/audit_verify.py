"""`python -m bench.audit_verify [--events N] [--workspaces W]`: how fast `linkflow audit verify`
and `linkflow audit verify-export` check a log (issue 15: ≥ 50,000 events/s over 1,000,000
events). Prints one JSON line.

On a database of its own (dropped at the end): bulk-loads N events spread over W workspaces
with SQL (`generate_series`, states of ~200 bytes with actors and request ids), records their
chain with the chain code (`domain.audit_chain`, COPY into `audit_chain`) and signs one
checkpoint per workspace head, then times `verify` over the whole log, `export` of one
workspace, and `verify-export` of that file.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from domain.audit_chain import GENESIS, chain_event, link
from domain.audit_signing import SigningKey, checkpoint_message
from gateways import audit_cli
from infra.schema import drop_database, migrate
from infra.settings import Settings

TARGET_EVENTS_PER_S = 50_000
LOAD = """
INSERT INTO linkflow_events
    (originator_id, originator_version, topic, state, notification_id, actor, request_id)
SELECT md5('agg' || (i / 10))::uuid, i %% 10 + 1, 'domain.execution:Execution.NodeCompleted',
       convert_to(json_build_object(
           'workspace_id', md5('ws' || (i %% %(w)s))::uuid::text,
           'timestamp', json_build_object('_type_', 'datetime_iso',
                                          '_data_', '2026-01-01T00:00:00.000000+00:00'),
           'node_id', 'node-' || (i %% 7), 'attempt', 1,
           'output', json_build_object('value', i, 'label', 'row ' || i))::text, 'UTF8'),
       i,
       json_build_object('type', 'user', 'id', md5('user' || (i %% 13))::uuid::text)::jsonb,
       'req-' || i
FROM generate_series(%(start)s::bigint, %(end)s::bigint) AS i
"""


def load(settings: Settings, events: int, workspaces: int) -> float:
    started = time.monotonic()
    with psycopg.connect(settings.conninfo) as conn:
        for start in range(1, events + 1, 100_000):
            end = min(start + 99_999, events)
            conn.execute(LOAD, {"w": workspaces, "start": start, "end": end})  # type: ignore[arg-type]
        conn.commit()
    return time.monotonic() - started


def record_chain(settings: Settings, key: SigningKey) -> float:
    """The chain as the audit consumer would record it, and a checkpoint of each head."""
    started = time.monotonic()
    heads: dict[str, tuple[int, bytes]] = {}
    with psycopg.connect(settings.conninfo) as read, psycopg.connect(settings.conninfo) as write:
        with (
            read.cursor(name="load", binary=True) as cur,
            write.cursor().copy("COPY audit_chain (position, workspace_id, hash) FROM STDIN") as cp,
        ):
            cur.execute(
                "SELECT notification_id, originator_id::text, originator_version, topic, state,"
                " actor::text, request_id FROM linkflow_events ORDER BY notification_id"
            )
            while rows := cur.fetchmany(10_000):
                for row in rows:
                    e = chain_event(*row)
                    head = link(heads.get(e.workspace_id, (0, GENESIS))[1], e)
                    heads[e.workspace_id] = (e.position, head)
                    cp.write_row((e.position, e.workspace_id, head))
        now = datetime.now(UTC)
        write.execute(
            "INSERT INTO audit_keys (key_id, public_key) VALUES (%s, %s)",
            (key.key_id, key.public_key),
        )
        with write.cursor() as cur:
            cur.executemany(
                "INSERT INTO audit_checkpoints VALUES (%s, %s, %s, %s, %s, %s)",
                [
                    (ws, p, h, now, key.key_id, key.sign(checkpoint_message(ws, p, h, now)))
                    for ws, (p, h) in heads.items()
                ],
            )
        write.commit()
    return time.monotonic() - started


def measure(events: int, workspaces: int) -> dict[str, Any]:
    """Load, chain and sign `events` events on a scratch database, verify them, export one
    workspace and verify the export: the JSON line's figures (the database is dropped)."""
    settings = Settings(pg_db=f"lf_bench_audit_{uuid.uuid4().hex[:8]}", log_level="WARNING")
    key = SigningKey.generate()
    migrate(settings)
    try:
        print(f"loading {events} events…", file=sys.stderr)
        load_s = load(settings, events, workspaces)
        chain_s = record_chain(settings, key)
        report = audit_cli.verify(settings)
        assert report.finding is None, report.text()
        workspace = str(uuid.UUID(bytes=bytes.fromhex(_md5("ws0"))))
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "export.jsonl"
            started = time.monotonic()
            with path.open("w", encoding="utf-8") as out:
                audit_cli.export(settings, workspace, 0, None, out)
            export_s = time.monotonic() - started
            size = path.stat().st_size
            started = time.monotonic()
            with path.open("rb") as lines:
                summary = audit_cli.verify_export(lines, key.public_key, size)
            check_s = time.monotonic() - started
        exported = int(summary.split(" events")[0].removeprefix("OK: "))
        return {
            "bench": "audit_verify",
            "events": events,
            "workspaces": workspaces,
            "load_s": round(load_s, 1),
            "record_chain_s": round(chain_s, 1),
            "verify_s": round(report.seconds, 2),
            "verify_events_per_s": round(report.events / report.seconds),
            "checkpoints_verified": report.checkpoints,
            "export_events": exported,
            "export_mb": round(size / 1e6, 1),
            "export_events_per_s": round(exported / export_s),
            "verify_export_events_per_s": round(exported / check_s),
            "target_events_per_s": TARGET_EVENTS_PER_S,
        }
    finally:
        drop_database(settings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.audit_verify", description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--workspaces", type=int, default=10)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.events, args.workspaces)))
    return 0


def _md5(text: str) -> str:
    import hashlib

    return hashlib.md5(text.encode()).hexdigest()  # noqa: S324 - as PostgreSQL's md5()


if __name__ == "__main__":
    sys.exit(main())
