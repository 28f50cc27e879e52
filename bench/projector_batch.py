"""The projector's write, measured apart: `projections.visibility.project` of batches of pure-3
executions (each started and closed in its batch, as the pipeline relays them), one transaction
per batch, on a scratch database, with no relay, Redis or HTTP around it.

It answers "what does a read-model change cost the projector's transaction", which the pipeline's
projection lag shows only through the noise of five processes sharing two cores. Each round
projects one batch with the triggers of `rm_executions` enabled and one with them disabled
(`--compare-triggers`; the rollups of migration 013/015 are kept by those triggers) on a second
scratch database, alternating so that both see the same machine; the medians of the rounds are
reported.

    python -m bench.projector_batch [--batch 100] [--rounds 40] [--compare-triggers]

One JSON line: {"projector_batch": {...}}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row

from bench.shapes import PURE_3
from domain.definition import parse_definition
from domain.execution import Execution
from infra.schema import drop_database, migrate
from infra.settings import Settings
from projections.visibility import project

WORKFLOWS = 3


def batch_events(size: int, start: datetime, workspace: str, workflows: list[str]) -> list[Any]:
    """The events of `size` pure-3 executions, each started and completed, in log order."""
    definition = parse_definition(PURE_3).to_json()
    events: list[Any] = []
    for i in range(size):
        at = start + timedelta(milliseconds=7 * i)
        ex = Execution.start(
            uuid.uuid4(), workspace, workflows[i % len(workflows)], 1, definition, {"n": i}, at
        )
        for node, output in (("a", {"n": i}), ("b", {"branch": "yes"}), ("c", {"done": i})):
            ex.start_node(node, 1, at)
            ex.complete_node(node, 1, output, at + timedelta(milliseconds=3))
        events += ex.collect_events()
    return events


async def _timed_batch(conn: psycopg.AsyncConnection[Any], events: list[Any]) -> float:
    began = time.perf_counter()
    async with conn.transaction():
        await project(conn, [(None, e) for e in events])
    return (time.perf_counter() - began) * 1000


async def run(databases: list[Settings], size: int, rounds: int) -> list[float]:
    """Median ms per batch on each database, their batches alternating."""
    workspace = str(uuid.uuid4())
    workflows = [str(uuid.uuid4()) for _ in range(WORKFLOWS)]
    start = datetime.now(UTC) - timedelta(hours=1)
    took: list[list[float]] = [[] for _ in databases]
    conns = [
        await psycopg.AsyncConnection.connect(s.conninfo, row_factory=dict_row, autocommit=True)
        for s in databases
    ]
    try:
        for r in range(rounds + 2):  # two warm-up rounds, not counted
            for i, conn in enumerate(conns):
                at = start + timedelta(seconds=r, milliseconds=100 * i)
                ms = await _timed_batch(conn, batch_events(size, at, workspace, workflows))
                if r >= 2:
                    took[i].append(ms)
    finally:
        for conn in conns:
            await conn.close()
    return [round(statistics.median(t), 2) for t in took]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=100, help="executions per batch")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument(
        "--compare-triggers",
        action="store_true",
        help="alternate each batch with one projected with rm_executions' triggers disabled",
    )
    args = parser.parse_args()
    databases = [Settings(pg_db=f"lf_projbench_{uuid.uuid4().hex[:8]}")]
    if args.compare_triggers:
        databases.append(Settings(pg_db=f"lf_projbench_{uuid.uuid4().hex[:8]}"))
    try:
        for settings in databases:
            migrate(settings)
        if args.compare_triggers:
            with psycopg.connect(databases[1].conninfo, autocommit=True) as conn:
                conn.execute("ALTER TABLE rm_executions DISABLE TRIGGER USER")
        medians = asyncio.run(run(databases, args.batch, args.rounds))
    finally:
        for settings in databases:
            drop_database(settings)
    summary: dict[str, Any] = {
        "batch_executions": args.batch,
        "rounds": args.rounds,
        "ms_per_batch_median": medians[0],
    }
    if args.compare_triggers:
        summary["ms_per_batch_median_without_triggers"] = medians[1]
    print(json.dumps({"projector_batch": summary}))


if __name__ == "__main__":
    main()
