"""`python -m bench` end to end, in its shortest forms: it starts its own stack, drives pure-3
executions, and prints one JSON line with every figure the performance docs name; and each
opt-in fault shape (`overload`, `noisy`, `chaos`) at tiny sizes, so that CI proves they run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import psycopg
from processes import REPO

from infra.settings import Settings

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


def run_bench(redis_url: str, *argv: str, timeout: float = 120) -> list[dict[str, Any]]:
    """`python -m bench …` with `--peer none`; its JSON lines (asserting it exited 0)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINKFLOW_")}
    env["LINKFLOW_REDIS_URL"] = redis_url
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--peer", "none", *argv],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def test_overload_shape_refuses_the_excess_and_calls_no_ended_attempt(redis_url: str) -> None:
    # Capacity 8/s (8 slots, 1 s calls), 40/s offered for 3 s, at most 10 open: most are 429.
    (line,) = run_bench(
        redis_url,
        "--shapes",
        "overload",
        "--worker-concurrency",
        "8",
        "--overload-factor",
        "5",
        "--overload-seconds",
        "3",
        "--max-queued",
        "10",
        "--watch-after-close",
        "1",
        "--rss-idle",
        "0",
    )
    assert (line["bench"], line["layout"]["name"]) == ("overload", "split")
    assert line["offered"] == 120
    assert line["accepted"] > 0 and line["refused_429"] > 0
    assert line["accepted"] + line["refused_429"] == line["offered"], line["other_errors"]
    assert line["completed"] == line["accepted"] == line["closed_once"]
    assert line["calls_total"] == line["accepted"]
    assert line["calls_for_ended_attempts"] == 0
    assert line["health_samples"] > 0 and line["health_p99_ms"] is not None
    assert line["drain_s"] >= 0 and line["rss_mb_after_drain"]["worker-1"] > 0


def test_noisy_shape_measures_b_alone_and_during_a_flood(redis_url: str) -> None:
    (line,) = run_bench(
        redis_url,
        "--shapes",
        "noisy",
        "--noisy-shape",
        "http-1",
        "--noisy-flood",
        "300",
        "--noisy-backlog",
        "50",
        "--noisy-executions",
        "20",
        "--noisy-rate",
        "10",
    )
    assert line["bench"] == "noisy"
    assert line["a_accepted"] == 300 and line["a_not_completed"] == 0
    for phase in ("b_alone", "b_during_flood"):
        assert line[phase]["sent"] == 20 and line[phase]["unclosed"] == 0, line[phase]
        assert 0 < line[phase]["p50_ms"] <= line[phase]["p95_ms"]
        assert 0 < line[phase]["hop_wait_p50_ms"] <= line[phase]["hop_p95_ms"], line[phase]
    assert line["p95_ratio"] > 0 and line["a_executions_per_s"] > 0


def test_chaos_shape_closes_every_execution_once_through_kills_and_outages(
    redis_url: str,
) -> None:
    (line,) = run_bench(
        redis_url,
        "--shapes",
        "chaos",
        "--chaos-executions",
        "150",
        "--chaos-rate",
        "30",
        "--chaos-kill-every",
        "1.5",
        "--chaos-pg-cut",
        "1.5",
        "--chaos-claim-idle-ms",
        "2000",
        "--seed",
        "7",
    )
    assert line["bench"] == "chaos" and line["checks_passed"], line["checks"]
    assert line["accepted"] == line["closed_once"] == 150
    assert line["kills_total"] >= 2 and line["redis_restarts"] == 1 and line["pg_cuts"] == 1
    assert line["read_model_rows"]["rm_executions"] == 150
    assert min(line["repeated_calls"], 50) == len(line["repeated_call_times_s"])
    assert line["calls_total"] >= 75 * 3  # half the executions are http-3: three calls each


def test_the_projector_batch_bench_prints_both_medians_and_drops_its_databases() -> None:
    # The PostgreSQL the suite uses, nothing else of its settings.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("LINKFLOW_") or k.startswith("LINKFLOW_PG_")
    }
    argv = ["-m", "bench.projector_batch", "--batch", "10", "--rounds", "3", "--compare-triggers"]
    done = subprocess.run(
        [sys.executable, *argv], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    [line] = [json.loads(out) for out in done.stdout.splitlines() if out.strip()]
    summary = line["projector_batch"]
    assert (summary["batch_executions"], summary["rounds"]) == (10, 3)
    assert summary["ms_per_batch_median"] > 0
    assert summary["ms_per_batch_median_without_triggers"] > 0
    with psycopg.connect(Settings().conninfo_for("postgres")) as conn:
        left = conn.execute(
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'lf_projbench_%'"
        ).fetchone()
    assert left == (0,)


def test_the_audit_shapes_print_their_figures_at_a_tiny_size(redis_url: str) -> None:
    """`audit-log` (pages of the event log) and `audit-verify` (verify and verify-export), the
    auditors' figures of `make bench`, at 2,000 events."""
    argv = ("--shapes", "audit-log,audit-verify", "--audit-events", "2000")
    log, verify = run_bench(redis_url, *argv, "--audit-repeats", "5", timeout=240)
    assert (log["bench"], log["limit"], log["repeats"]) == ("audit_log", 1000, 5)
    assert log["events"] >= 2000 and log["page_items"] == 1000
    assert 0 < log["page_p50_ms"] <= log["page_p95_ms"]
    assert verify["bench"] == "audit_verify" and verify["events"] == 2000
    assert verify["verify_events_per_s"] > 0 and verify["verify_export_events_per_s"] > 0
    assert verify["checkpoints_verified"] == verify["workspaces"]
