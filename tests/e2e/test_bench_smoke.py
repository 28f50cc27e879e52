"""`python -m bench` end to end, in its shortest form: it starts its own stack, drives pure-3
executions, and prints one JSON line with every figure the performance docs name."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from processes import REPO

FIELDS = (
    "executions_per_s",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "api_start_p95_ms",
    "projection_lag_p95_ms",
    "rss_mb",
    "runs",
)


def test_quick_bench_prints_one_summary_line_with_a_positive_rate(redis_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINKFLOW_")}
    env["LINKFLOW_REDIS_URL"] = redis_url
    argv = ["-m", "bench", "--quick", "--shapes", "pure-3", "--peer", "none", "--duration", "3"]
    done = subprocess.run(
        [sys.executable, *argv], cwd=REPO, env=env, capture_output=True, text=True, timeout=90
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, done.stdout
    line = lines[0]
    assert (line["bench"], line["system"], line["layout"]["name"]) == ("pure-3", "linkflow", "all")
    assert all(line.get(key) is not None for key in FIELDS), line
    assert line["executions_per_s"] > 0
    assert 0 < line["p50_ms"] <= line["p95_ms"] <= line["p99_ms"]
    assert line["rss_mb"]["all"] > 0
    run = line["runs"][0]
    assert (run["failed"], run["unclosed"], run["start_errors"]) == (0, 0, {})
