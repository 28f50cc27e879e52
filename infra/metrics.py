"""Prometheus metrics of every LinkFlow process (prometheus-client, default registry), served at
`/metrics` by gateways.http.ops. Everything may import this module.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

COMMANDS = Counter("linkflow_commands_total", "Commands handled", ["command", "outcome"])
COMMAND_SECONDS = Histogram(
    "linkflow_command_seconds", "Command latency (load, decide, save)", ["command"]
)
COMMAND_CONFLICTS = Counter(
    "linkflow_command_conflicts_total", "Optimistic-concurrency conflicts retried", ["command"]
)
EVENTS_RELAYED = Counter("linkflow_relay_events_total", "Events published to Redis by the relay")
RELAY_POSITION = Gauge("linkflow_relay_position", "Last notification id relayed")
CONSUMER_EVENTS = Counter(
    "linkflow_consumer_events_total", "Events applied by a consumer", ["consumer"]
)
CONSUMER_CATCHUP = Counter(
    "linkflow_consumer_catchup_events_total",
    "Events a consumer read from the event store instead of Redis",
    ["consumer"],
)
MALFORMED_ENTRIES = Counter(
    "linkflow_malformed_entries_total", "Stream entries dropped as malformed", ["consumer"]
)
UNDECODABLE_EVENTS = Counter(
    "linkflow_undecodable_events_total", "Log events a consumer could not decode", ["consumer"]
)
CONSUMER_POSITION = Gauge("linkflow_consumer_position", "Consumer position", ["consumer"])
TASKS_DISPATCHED = Counter(
    "linkflow_tasks_dispatched_total", "Node tasks sent to workers", ["queue"]
)
STARTS_REFUSED = Counter(
    "linkflow_starts_refused_total", "Starts refused with 429: the workspace had its fill open"
)
TASKS_HELD = Gauge(
    "linkflow_tasks_held", "Tasks matching holds back (their queue's backlog is full)", ["queue"]
)
TASKS_SKIPPED = Counter(
    "linkflow_tasks_skipped_total", "Tasks a worker did not run: their attempt had ended"
)
NODE_RUNS = Counter("linkflow_node_runs_total", "Node attempts run by workers", ["type", "outcome"])
NODE_SECONDS = Histogram("linkflow_node_seconds", "Node attempt duration in workers", ["type"])
TIMERS_FIRED = Counter("linkflow_timers_fired_total", "Timers fired", ["kind"])
HTTP_REQUESTS = Counter(
    "linkflow_http_requests_total", "HTTP requests", ["method", "route", "status"]
)
HTTP_SECONDS = Histogram("linkflow_http_request_seconds", "HTTP request latency", ["route"])
CALLBACK_ATTEMPTS = Counter(
    "linkflow_callback_attempts_total", "Callback delivery attempts", ["outcome"]
)
SCHEDULE_RUNS = Counter("linkflow_schedule_runs_total", "Executions started by cron schedules")
SCHEDULE_SKIPPED = Counter(
    "linkflow_schedule_skipped_total",
    "Missed due times a schedule's catch-up policy left out",
    ["catch_up"],
)
EVENT_LOOP_LAG = Histogram(
    "linkflow_event_loop_lag_seconds",
    "How late the event loop ran a timer that was due (the loop held by other work)",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
DEPENDENCY_UP = Gauge(
    "linkflow_dependency_up",
    "1 while this process reaches the dependency, 0 from its first failure until it works again",
    ["dependency"],
)
LEADER = Gauge(
    "linkflow_leader",
    "1 while this process leads the single-active role (holds its advisory lock)",
    ["name"],
)
EXPORTED_ROWS = Counter(
    "linkflow_exported_rows_total",
    "Executions written by exports (…/executions/export)",
    ["format"],
)
EXPORTS = Counter(
    "linkflow_exports_total",
    "Exports by how they ended: completed, client_gone, stalled, failed, cancelled, refused",
    ["format", "outcome"],
)
SSE_STREAMS = Gauge("linkflow_sse_streams", "Open SSE streams of this gateway", ["kind"])
SSE_CUT = Counter(
    "linkflow_sse_cut_total",
    "SSE clients cut off: slow (their queue was full), stalled (a write timed out) or access"
    " (their caller lost access to the workspace)",
    ["reason"],
)
SSE_ACCESS_CHECKS = Counter(
    "linkflow_sse_access_checks_total",
    "Open SSE streams' access checked again: kept, or lost (the stream is cut off)",
    ["outcome"],
)
SSE_REFUSED = Counter(
    "linkflow_sse_refused_total", "SSE streams refused: LINKFLOW_SSE_MAX_STREAMS were open"
)
SSE_MESSAGES = Counter("linkflow_sse_messages_total", "SSE events sent to clients", ["kind"])
SSE_LOG_READS = Counter(
    "linkflow_sse_log_read_events_total",
    "Events the live hub read from the event store because Redis did not bring them",
)
