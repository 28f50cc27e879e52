"""The `visibility` shape's data: a bulk load of one workspace's execution read models.

`load(conninfo, ws, workflows, total)` writes `total` executions (default 1,000,000) over the
30 days before now into `rm_executions` and their three search attributes into
`rm_execution_attributes`, in chunks of one INSERT … SELECT each: the rows the projector writes
for an execution started and closed (the same columns and value shapes: `event_version` 8,
`input` {}, the output of a transform, an error with `type` and `node_id` for failures), so the
database derives what it derives from the projector's rows (generated columns, and whatever
the read models maintain from `rm_executions` rows). Not loaded: `rm_node_runs` (no analyst
query reads it) and the event log (these executions have no events: the shape measures reads).

The mix, reproducible (`setseed`): 20 workflows evenly; statuses completed 90 %, failed 7 %,
canceled 1.5 %, timed_out 0.5 %, and the executions of the last 2 minutes still running;
durations log-normal around 250 ms (a long tail to minutes); triggers manual 60 %, webhook 30 %,
schedule 10 %; attributes `customer` (text, 10,000 values), `region` (text, 8 values) and
`amount` (an integer 1..10,000). Imported by `bench.visibility`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import psycopg

from bench.procs import progress

REGIONS = ("eu", "us", "apac", "latam", "mea", "ca", "uk", "au")
CUSTOMERS = 10_000
CHUNK = 100_000
DAYS = 30

_LOAD = """
WITH drawn AS (
    SELECT gen_random_uuid() AS id,
           (%(workflows)s::uuid[])[1 + (i %% %(n_workflows)s)] AS workflow_id,
           'wf-' || lpad((i %% %(n_workflows)s)::text, 2, '0') AS workflow_name,
           now() - random() * %(days)s * interval '1 day' AS started_at,
           random() AS s, random() AS t,
           exp(ln(250) + 1.2 * sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random())) AS took_ms,
           1 + floor(random() * %(customers)s)::int AS customer,
           (%(regions)s::text[])[1 + floor(random() * %(n_regions)s)::int] AS region,
           1 + floor(random() * 10000)::int AS amount
      FROM generate_series(1, %(rows)s) AS i
), shaped AS (
    SELECT d.*,
           CASE WHEN started_at > now() - interval '2 minutes' THEN 'running'
                WHEN s < 0.90 THEN 'completed' WHEN s < 0.97 THEN 'failed'
                WHEN s < 0.985 THEN 'canceled' ELSE 'timed_out' END AS status,
           CASE WHEN t < 0.6 THEN 'manual' WHEN t < 0.9 THEN 'webhook' ELSE 'schedule' END
               AS trigger
      FROM drawn d
), inserted AS (
    INSERT INTO rm_executions (id, workspace_id, workflow_id, workflow_name, version, status,
                               trigger, input, output, error, started_at, closed_at,
                               event_version, callback, search_attributes)
    SELECT id, %(ws)s, workflow_id, workflow_name, 1, status, trigger, '{}'::jsonb,
           CASE status WHEN 'completed' THEN '{"x": 1}'::jsonb END,
           CASE status
               WHEN 'failed' THEN jsonb_build_object('type', 'http_status', 'node_id', 'call',
                                                     'message', 'HTTP 500')
               WHEN 'canceled' THEN '{"type": "canceled", "message": "canceled by request"}'
               WHEN 'timed_out' THEN '{"type": "timed_out", "message": "the execution timed out"}'
           END::jsonb,
           started_at,
           CASE WHEN status <> 'running' THEN started_at + took_ms * interval '1 millisecond' END,
           8, NULL,
           jsonb_build_object('customer', 'c-' || customer, 'region', region, 'amount', amount)
      FROM shaped
    RETURNING id, workspace_id, search_attributes
)
INSERT INTO rm_execution_attributes (execution_id, name, workspace_id, text_value, num_value)
SELECT id, a.key, workspace_id,
       CASE jsonb_typeof(a.value) WHEN 'string' THEN a.value #>> '{}' END,
       CASE jsonb_typeof(a.value) WHEN 'number' THEN (a.value #>> '{}')::numeric END
  FROM inserted, jsonb_each(search_attributes) AS a
"""


def load(conninfo: str, ws: str, workflows: Sequence[str], total: int, seed: float = 0.42) -> float:
    """Bulk-load `total` executions of workspace `ws` spread over `workflows`; returns seconds."""
    started = time.perf_counter()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SELECT setseed(%s)", (seed,))
        done = 0
        while done < total:
            rows = min(CHUNK, total - done)
            conn.execute(
                _LOAD,
                {
                    "workflows": list(workflows),
                    "n_workflows": len(workflows),
                    "days": DAYS,
                    "customers": CUSTOMERS,
                    "regions": list(REGIONS),
                    "n_regions": len(REGIONS),
                    "rows": rows,
                    "ws": ws,
                },
            )
            done += rows
            progress(f"visibility: loaded {done:,} of {total:,} executions")
        conn.execute("VACUUM ANALYZE rm_executions")
        conn.execute("VACUUM ANALYZE rm_execution_attributes")
        conn.execute("VACUUM ANALYZE rm_execution_stats")
    return time.perf_counter() - started
