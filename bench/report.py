"""The benchmark's output: one JSON line per (shape, system) with the medians of its runs, and
one line per shape with LinkFlow's ratio to DBOS; all to stdout (progress goes to stderr).
"""

from __future__ import annotations

import json
import statistics
from typing import Any

MEDIAN_KEYS = (
    "executions_per_s",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "api_start_p95_ms",
    "projection_lag_p95_ms",
    "audit_chain_lag_p95_ms",
    "audit_checkpoint_lag_p95_ms",
)


def median(values: list[Any]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 1) if present else None


def summary(
    shape: str,
    system: str,
    layout: dict[str, Any],
    runs: list[dict[str, Any]],
    rss_mb: dict[str, float],
    cpu_pct: dict[str, float],
    settings: dict[str, Any],
) -> dict[str, Any]:
    line: dict[str, Any] = {"bench": shape, "system": system, "layout": layout}
    for key in MEDIAN_KEYS:
        line[key] = median([run.get(key) for run in runs])
    line["rss_mb"] = rss_mb
    line["cpu_pct"] = cpu_pct
    line |= settings
    line["runs"] = runs
    return line


def ratio(shape: str, linkflow: dict[str, Any], dbos: dict[str, Any]) -> dict[str, Any]:
    ours, theirs = linkflow["executions_per_s"], dbos["executions_per_s"]
    return {
        "bench": shape,
        "vs_dbos": round(ours / theirs, 2) if ours and theirs else None,
        "linkflow_executions_per_s": ours,
        "dbos_executions_per_s": theirs,
        "linkflow_p50_ms": linkflow["p50_ms"],
        "dbos_p50_ms": dbos["p50_ms"],
        "linkflow_p95_ms": linkflow["p95_ms"],
        "dbos_p95_ms": dbos["p95_ms"],
    }


def emit(line: dict[str, Any]) -> None:
    print(json.dumps(line), flush=True)
