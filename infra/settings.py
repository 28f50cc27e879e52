"""Process settings, read from `LINKFLOW_*` environment variables (pydantic-settings).

Defaults work against PostgreSQL on 127.0.0.1:5432 (user postgres, trust) and Redis on
127.0.0.1:6379. Everything may import this module.
"""

from __future__ import annotations

import math

from pydantic import ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_JWT_SECRET = "linkflow-dev-secret-change-me-0123456789"
DEV_SECRET_KEY = "linkflow-dev-encryption-key-change-me-0123456789"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LINKFLOW_", frozen=True)

    pg_host: str = "127.0.0.1"
    pg_port: int = 5432
    pg_db: str = "linkflow"
    pg_user: str = "postgres"
    pg_password: str = ""
    pg_pool_size: int = 8
    # Threads running commands. More than the connections: a thread waiting for its group
    # commit (infra/group_commit.py) holds none, and more waiters make larger batches.
    command_threads: int = 32
    # Aggregates kept in memory per process (LRU, fast-forwarded on use). An execution with its
    # definition takes ~20 KB: 1,000 bounds the RSS (~20 MB); a miss costs one full load.
    aggregate_cache_size: int = 1000
    switch_interval_s: float = 0.0005

    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "lf:"

    http_host: str = "127.0.0.1"
    http_port: int = 8000
    metrics_port: int | None = None
    max_body_bytes: int = 1024 * 1024

    jwt_secret: str = DEV_JWT_SECRET
    jwt_issuer: str = "linkflow"
    access_token_ttl_s: int = 900
    refresh_token_ttl_s: int = 30 * 24 * 3600
    # Login throttling: failures allowed per account / per client address within the window.
    login_failures_per_account: int = 5
    login_failures_per_address: int = 20
    login_window_s: int = 900
    # Encrypts credentials at rest (AES-256-GCM, key derived with HKDF); keep it secret.
    secret_key: str = DEV_SECRET_KEY
    # Webhooks with `respond: on_completion` wait at most this long, then answer 202.
    webhook_wait_s: float = 30.0
    # Callbacks: attempts before giving up, and the back-off (base * 2^n, capped).
    callback_max_attempts: int = 12
    callback_backoff_s: float = 1.0
    callback_backoff_max_s: float = 3600.0

    allow_private_network: bool = False
    # The base of the URLs LinkFlow hands out (signal URLs: `{{ execution.signal_url.<name> }}`),
    # and how long a signal URL works after its execution started.
    public_url: str = "http://127.0.0.1:8080"
    signal_url_ttl_s: float = 30 * 24 * 3600.0
    worker_concurrency: int = 64
    worker_queues: str = "default"
    task_claim_idle_ms: int = 30_000
    lost_task_after_s: float = 30.0
    events_stream_maxlen: int = 10_000  # entries, each up to 100 events (infra.relay)
    log_level: str = "INFO"

    # ---- Overload: admission and dispatch (docs/architecture.md, "Limits and timeouts")
    # Executions a workspace may have open (queued or running); past it a start is 429 (0: no cap).
    max_queued_per_workspace: int = 10_000
    # Entries a task stream may hold that no worker has read yet; past it the fast path leaves
    # tasks to matching, which feeds them round-robin across workspaces as workers free up.
    dispatch_backlog: int = 256
    # How many unread entries matching's feed of held tasks keeps in a task stream (at most half
    # the backlog): what a workspace with nothing held waits behind while another's flood is fed.
    dispatch_feed_level: int = 32
    # Deliveries of one task entry without a recorded result before its node fails with
    # `worker_error` (a worker that dies on it, again and again).
    task_max_deliveries: int = 5

    # ---- Limits on what one request or one node may make the system hold
    max_nodes: int = 2_000  # nodes per workflow definition
    max_json_depth: int = 64  # nesting of request bodies and of parsed http_request responses
    max_output_bytes: int = 1024 * 1024  # a node's output (JSON bytes): else `output_too_large`
    max_event_bytes: int = 2 * 1024 * 1024  # one stored event (ExecutionStarted holds input+def)
    max_expression_cost: int = 100_000  # work units one `{{ }}` evaluation may spend
    max_expression_result_bytes: int = 1024 * 1024  # what one `{{ }}` evaluation may produce
    max_variables_bytes: int = 256 * 1024  # a workspace's variables together (JSON bytes)

    # ---- Outages
    # Every request is answered within this time: past it, 503 `unavailable` + Retry-After.
    request_deadline_s: float = 5.0
    # How long to wait for a PostgreSQL connection (pool checkout and connect).
    pg_wait_s: float = 3.0

    # ---- Exports (GET …/executions/export, gateways/http/routes_export.py)
    # Exports one gateway process streams at once, each holding a PostgreSQL connection of the
    # pool for its duration; past it 429 `too_many_exports` with Retry-After.
    max_exports: int = 2
    # A client that takes longer than this to accept one chunk (~256 KB) of an export has its
    # export ended (the connection closed), so a stalled reader holds no connection for long.
    export_stall_s: float = 60.0

    # ---- Memory
    # Bytes of aggregates kept in memory per process (estimated), besides the count above.
    aggregate_cache_bytes: int = 64 * 1024 * 1024

    # ---- Live updates (SSE, gateways/http/live.py)
    # Messages an SSE client may have waiting; a client that falls this far behind is cut off.
    sse_queue: int = 256
    # A comment line (`: keep-alive`) at least this often on an otherwise quiet stream.
    sse_heartbeat_s: float = 15.0
    # A write to an SSE client that does not complete within this time cuts the client off.
    sse_write_timeout_s: float = 10.0
    # Open SSE streams per gateway process; past it a new stream is 503 with Retry-After.
    sse_max_streams: int = 1000
    # An open stream's access is checked again this often (token expiry, membership, role,
    # API key revocation); a stream whose caller lost it is cut off.
    sse_access_check_s: float = 30.0

    # ---- Audit chain (engine/audit_chain.py, docs/audit.md)
    # A workspace whose chain head moved has its head signed at least this often (seconds).
    audit_checkpoint_s: float = 60.0
    # The Ed25519 key that signs checkpoints: base64 of the 32-byte private key. Unset: the key
    # in `audit_key_file`, generated there on first start (development). Keep it secret.
    audit_signing_key: str | None = None
    # The key's id in checkpoints and GET /audit/keys (default: derived from the public key).
    audit_key_id: str | None = None
    # Where a generated development key is kept (default: ~/.local/share/linkflow/).
    audit_key_file: str | None = None

    @field_validator("jwt_secret", "secret_key")
    @classmethod
    def _long_enough(cls, value: str, info: ValidationInfo) -> str:
        if len(value) < 32:
            raise ValueError(
                f"LINKFLOW_{str(info.field_name).upper()} must be at least 32 characters"
            )
        return value

    @property
    def pg_connect_timeout(self) -> int:
        """libpq's `connect_timeout` for `pg_wait_s` (whole seconds, at least 1)."""
        return max(1, math.ceil(self.pg_wait_s))

    @property
    def conninfo(self) -> str:
        return self.conninfo_for(self.pg_db)

    def conninfo_for(self, dbname: str) -> str:
        return (
            f"host={self.pg_host} port={self.pg_port} dbname={dbname} "
            f"user={self.pg_user} password={self.pg_password}"
        )

    def process_env(self) -> dict[str, str]:
        """The `LINKFLOW_*` variables that point another process at this database and Redis."""
        return {
            "LINKFLOW_PG_HOST": self.pg_host,
            "LINKFLOW_PG_PORT": str(self.pg_port),
            "LINKFLOW_PG_DB": self.pg_db,
            "LINKFLOW_PG_USER": self.pg_user,
            "LINKFLOW_REDIS_URL": self.redis_url,
            "LINKFLOW_REDIS_PREFIX": self.redis_prefix,
        }

    def key(self, name: str) -> str:
        """A Redis key under this deployment's prefix."""
        return f"{self.redis_prefix}{name}"

    @property
    def queues(self) -> list[str]:
        return [q.strip() for q in self.worker_queues.split(",") if q.strip()]
