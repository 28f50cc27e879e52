"""Dependency outages: how a LinkFlow process tells that PostgreSQL or Redis is away, and says so
once rather than in a traceback per loop iteration.

- `is_outage(exc)` names the dependency (`"postgres"`, `"redis"`) whose unavailability an
  exception shows — a refused, broken or timed-out connection, a server shutting down, a pool
  that gave no connection in time — following `raise … from` causes and exception groups; None
  for anything else (a constraint violation, a lock timeout, a bug).
- `is_unavailable(exc)`: what the HTTP API answers as 503 `unavailable` — every outage, and any
  other operational error of a dependency (a lock or statement timeout, …).
- `Outages` keeps, per dependency, whether an outage is in progress: the first failure logs one
  WARNING line `dependency_down` (dependency, error type and message, where; no traceback) and
  sets the gauge `linkflow_dependency_up{dependency}` to 0; failures while it is down are only
  counted; the first success after it logs one INFO line `dependency_up` (dependency, `down_s`,
  `failures`) and sets the gauge back to 1. A failure within `SETTLE_S` of that success is
  still counted with that outage (`late_failures`): it began waiting while the dependency was
  away. `OUTAGES` is the process's instance.
  Loops use it like this:

      with OUTAGES.guard("timer loop failed", "postgres"):   # one pass that talks to PostgreSQL
          ...
      # an outage: counted (one line per outage); another error: logged with its traceback;
      # success: PostgreSQL is marked up again

  or, by hand, `OUTAGES.report(exc)` (None when it is not an outage: log it yourself) and
  `OUTAGES.ok("redis")` after a call that reached Redis.
- `OutageLogFilter` (installed on the process's log handler by `install_log_filter`) is the
  backstop for code that logs `log.exception(...)` in a loop: a record whose exception is an
  outage is counted as a failure of that dependency instead of being written.

Everything may import this module (it imports only `infra.logging`, `infra.metrics` and the
client libraries' exception types).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
import redis.exceptions as redis_errors
from eventsourcing import persistence as es_errors

from infra import metrics
from infra.logging import get_logger, log_event

log = get_logger(__name__)

POSTGRES = "postgres"
REDIS = "redis"
DEPENDENCIES = (POSTGRES, REDIS)

# SQLSTATEs of a PostgreSQL server that is going away or will not take the connection:
# class 08 (connection exception), admin/crash shutdown, cannot connect now (starting up or
# recovering), too many connections.
_PG_UNAVAILABLE = frozenset({"57P01", "57P02", "57P03", "53300"})
# Errors of a dependency the HTTP API answers as 503 `unavailable` (retry later).
DEPENDENCY_ERRORS: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,  # includes psycopg_pool.PoolTimeout
    psycopg.InterfaceError,
    es_errors.OperationalError,
    es_errors.InterfaceError,
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
)
_ERROR_LIMIT = 300
# A failure reported this soon after its dependency came back is counted with the outage that
# just ended (an operation that began waiting for it during the outage: a pool checkout waits
# up to pg_wait_s, a request up to its deadline), not logged as a new outage.
SETTLE_S = 5.0


def _names(exc: BaseException) -> str | None:
    """The dependency this one exception (not its causes) shows to be unavailable."""
    if isinstance(exc, psycopg.InterfaceError):
        return POSTGRES
    if isinstance(exc, psycopg.OperationalError):
        state = exc.sqlstate
        if state is None or state.startswith("08") or state in _PG_UNAVAILABLE:
            return POSTGRES
        return None
    if isinstance(exc, es_errors.OperationalError | es_errors.InterfaceError):
        # The library re-raises psycopg's errors as its own, `from` the original: that one
        # decides (below); without a cause, take it at its word.
        return POSTGRES if exc.__cause__ is None else None
    if isinstance(exc, redis_errors.ConnectionError | redis_errors.TimeoutError):
        return REDIS
    return None


def _culprit(exc: BaseException) -> tuple[str, BaseException] | None:
    """The dependency whose unavailability `exc` shows and the exception that shows it: `exc`
    itself, what it was raised from (`__cause__`), the members of an exception group."""
    pending: list[BaseException] = [exc]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        name = _names(current)
        if name is not None:
            return name, current
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        if current.__cause__ is not None:
            pending.append(current.__cause__)
    return None


def is_outage(exc: BaseException) -> str | None:
    """The dependency whose unavailability `exc` shows, or None (see `_culprit`)."""
    found = _culprit(exc)
    return found[0] if found else None


def is_unavailable(exc: BaseException) -> bool:
    """True when the right answer to a request that met `exc` is 503 `unavailable`."""
    return is_outage(exc) is not None or isinstance(exc, DEPENDENCY_ERRORS)


def describe(exc: BaseException) -> str:
    """`Type: first line of the message`, short enough for a log line."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return text[:_ERROR_LIMIT]


@dataclass
class _Down:
    since: float  # time.monotonic() of the first failure
    failures: int


class Outages:
    """Outage state per dependency, its log lines and its gauge (see the module docstring).
    Thread-safe: command threads and log records of any thread may report."""

    def __init__(self, logger: logging.Logger | None = None, settle_s: float = SETTLE_S) -> None:
        self.log = logger or log
        self.settle_s = settle_s
        self._down: dict[str, _Down] = {}
        self._up_at: dict[str, float] = {}  # when each outage ended (time.monotonic())
        self._lock = threading.Lock()
        self.late_failures: dict[str, int] = {}
        for dependency in DEPENDENCIES:
            metrics.DEPENDENCY_UP.labels(dependency).set(1)

    def failed(self, dependency: str, exc: BaseException, where: str = "") -> bool:
        """Record a failure of `dependency`; True when it starts an outage (and was logged)."""
        now = time.monotonic()
        with self._lock:
            state = self._down.get(dependency)
            if state is not None:
                state.failures += 1
                return False
            if now - self._up_at.get(dependency, -self.settle_s) < self.settle_s:
                # Began waiting during the outage that just ended: part of it, not a new one.
                self.late_failures[dependency] = self.late_failures.get(dependency, 0) + 1
                return False
            self._down[dependency] = _Down(now, 1)
        metrics.DEPENDENCY_UP.labels(dependency).set(0)
        fields = {"dependency": dependency, "error": describe(exc)}
        if where:
            fields["where"] = where
        log_event(self.log, "dependency_down", level=logging.WARNING, **fields)
        return True

    def ok(self, dependency: str) -> bool:
        """Record that `dependency` just worked; True when that ends an outage (logged)."""
        if dependency not in self._down:  # the common case, without the lock
            return False
        with self._lock:
            state = self._down.pop(dependency, None)
            if state is None:
                return False
            self._up_at[dependency] = time.monotonic()
        metrics.DEPENDENCY_UP.labels(dependency).set(1)
        log_event(
            self.log,
            "dependency_up",
            dependency=dependency,
            down_s=round(time.monotonic() - state.since, 2),
            failures=state.failures,
        )
        return True

    def report(self, exc: BaseException, where: str = "") -> str | None:
        """If `exc` is an outage, record it (see `failed`) and return the dependency's name;
        otherwise None, and the caller logs `exc` as it would have."""
        found = _culprit(exc)
        if found is None:
            return None
        dependency, culprit = found
        self.failed(dependency, culprit, where)  # the line names the connection's error
        return dependency

    def is_down(self, dependency: str) -> bool:
        return dependency in self._down

    def down(self) -> dict[str, float]:
        """The dependencies with an outage in progress, and for how many seconds."""
        now = time.monotonic()
        with self._lock:
            return {name: now - state.since for name, state in self._down.items()}

    @contextmanager
    def guard(
        self, what: str, *touches: str, logger: logging.Logger | None = None
    ) -> Iterator[None]:
        """One pass of a loop: an outage is recorded (`report`), any other exception is logged
        as `what` with its traceback, and neither escapes; a pass that ends normally marks the
        dependencies it `touches` (talks to on every pass) as up."""
        try:
            yield
        except Exception as exc:
            if self.report(exc, where=what) is None:
                (logger or self.log).exception(what)
        else:
            for dependency in touches:
                self.ok(dependency)


OUTAGES = Outages()


class OutageLogFilter(logging.Filter):
    """Drops a log record whose exception is an outage, recording it as a failure of that
    dependency instead: the backstop for loops that `log.exception` on every iteration."""

    def __init__(self, outages: Outages = OUTAGES) -> None:
        super().__init__()
        self.outages = outages

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None:
            return True
        return self.outages.report(exc, where=f"{record.name}: {record.getMessage()}") is None


def install_log_filter(outages: Outages = OUTAGES) -> None:
    """Put `OutageLogFilter` on every handler of the root logger (after `logging.configure`)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, OutageLogFilter) for f in handler.filters):
            handler.addFilter(OutageLogFilter(outages))
