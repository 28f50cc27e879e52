"""infra.outages: which errors are outages of which dependency, and one log line per outage (not
one per failure), with the `linkflow_dependency_up` gauge following it."""

from __future__ import annotations

import logging

import psycopg
import pytest
import redis.exceptions as redis_errors
from eventsourcing import persistence as es_errors
from prometheus_client import REGISTRY
from psycopg_pool import PoolTimeout

from infra.outages import OutageLogFilter, Outages, is_outage, is_unavailable


def _raised_from(outer: Exception, cause: BaseException) -> Exception:
    try:
        try:
            raise cause
        except BaseException as exc:
            raise outer from exc
    except Exception as final:
        return final


def gauge(dependency: str) -> float | None:
    return REGISTRY.get_sample_value("linkflow_dependency_up", {"dependency": dependency})


@pytest.mark.parametrize(
    ("exc", "dependency"),
    [
        (psycopg.OperationalError("connection refused"), "postgres"),
        (psycopg.InterfaceError("the connection is closed"), "postgres"),
        (PoolTimeout("couldn't get a connection after 3.00 sec"), "postgres"),
        (psycopg.errors.AdminShutdown("terminating connection"), "postgres"),
        (psycopg.errors.CannotConnectNow("the database system is starting up"), "postgres"),
        (
            _raised_from(es_errors.OperationalError("x"), psycopg.OperationalError("closed")),
            "postgres",
        ),
        (es_errors.InterfaceError("no cause given"), "postgres"),
        (_raised_from(RuntimeError("wrapped"), PoolTimeout("no connection")), "postgres"),
        (redis_errors.ConnectionError("Error 111 connecting"), "redis"),
        (redis_errors.TimeoutError("Timeout reading from socket"), "redis"),
        (redis_errors.BusyLoadingError("loading"), "redis"),
        (ExceptionGroup("role", [ValueError("x"), redis_errors.ConnectionError("y")]), "redis"),
        # not outages
        (psycopg.errors.LockNotAvailable("lock timeout"), None),
        (psycopg.errors.UniqueViolation("duplicate key"), None),
        (
            _raised_from(
                es_errors.OperationalError("x"), psycopg.errors.QueryCanceled("statement timeout")
            ),
            None,
        ),
        (es_errors.IntegrityError("conflict"), None),
        (redis_errors.ResponseError("NOGROUP"), None),
        (ConnectionRefusedError("an outbound HTTP call"), None),
        (RuntimeError("a bug"), None),
    ],
)
def test_is_outage_names_the_dependency(exc: BaseException, dependency: str | None) -> None:
    assert is_outage(exc) == dependency


def test_operational_errors_that_are_no_outage_still_answer_unavailable() -> None:
    assert is_unavailable(psycopg.errors.LockNotAvailable("lock timeout"))
    assert is_unavailable(redis_errors.ConnectionError("refused"))
    assert not is_unavailable(psycopg.errors.UniqueViolation("duplicate key"))
    assert not is_unavailable(RuntimeError("a bug"))


def test_one_line_when_an_outage_starts_and_one_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    outages = Outages()
    caplog.set_level(logging.INFO, logger="infra.outages")
    error = psycopg.OperationalError("connection failed: Connection refused\nIs the server up?")
    assert outages.failed("postgres", error, where="timer loop") is True
    for _ in range(20):  # a loop failing every pass
        assert outages.failed("postgres", error) is False
    assert outages.is_down("postgres") and not outages.is_down("redis")
    assert gauge("postgres") == 0
    assert outages.ok("postgres") is True
    assert outages.ok("postgres") is False
    assert gauge("postgres") == 1

    records = [r for r in caplog.records if r.name == "infra.outages"]
    assert [(r.getMessage(), r.levelname) for r in records] == [
        ("dependency_down", "WARNING"),
        ("dependency_up", "INFO"),
    ]
    down, up = (r.fields for r in records)  # type: ignore[attr-defined]
    assert down == {
        "dependency": "postgres",
        "error": "OperationalError: connection failed: Connection refused",
        "where": "timer loop",
    }
    assert up["dependency"] == "postgres" and up["failures"] == 21 and up["down_s"] >= 0
    assert all(r.exc_info is None for r in records)


def test_guard_counts_outages_logs_other_errors_and_marks_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    outages = Outages()
    caplog.set_level(logging.INFO)
    for _ in range(5):
        with outages.guard("relay loop failed", "redis"):
            raise redis_errors.ConnectionError("Error 111 connecting to 127.0.0.1:1")
    with outages.guard("relay loop failed", "redis"):
        raise KeyError("a bug")
    assert outages.is_down("redis")
    with outages.guard("relay loop failed", "redis"):
        pass
    assert not outages.is_down("redis")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["dependency_down", "relay loop failed", "dependency_up"]
    [bug] = [r for r in caplog.records if r.getMessage() == "relay loop failed"]
    assert bug.exc_info is not None and isinstance(bug.exc_info[1], KeyError)


def test_the_log_filter_turns_outage_tracebacks_into_the_outage_line() -> None:
    outages = Outages()
    capture = logging.getLogger("test.outages.filtered")
    capture.propagate = False
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    handler = Keep()
    handler.addFilter(OutageLogFilter(outages))
    capture.addHandler(handler)
    outages.log = capture
    try:
        for _ in range(3):
            try:
                raise redis_errors.TimeoutError("Timeout reading from socket")
            except redis_errors.TimeoutError:
                capture.exception("heartbeat_failed")
        try:
            raise ValueError("not an outage")
        except ValueError:
            capture.exception("task_failed")
    finally:
        capture.removeHandler(handler)
    assert [r.getMessage() for r in seen] == ["dependency_down", "task_failed"]
    assert seen[0].fields["where"] == "test.outages.filtered: heartbeat_failed"  # type: ignore[attr-defined]
    assert outages.is_down("redis")


def test_the_line_names_the_connection_error_not_its_wrapper(
    caplog: pytest.LogCaptureFixture,
) -> None:
    outages = Outages()
    caplog.set_level(logging.INFO, logger="infra.outages")
    wrapped = ExceptionGroup(
        "unhandled errors in a TaskGroup",
        [_raised_from(RuntimeError("matching"), psycopg.OperationalError("server closed"))],
    )
    assert outages.report(wrapped, where="role matching") == "postgres"
    [line] = [r for r in caplog.records if r.getMessage() == "dependency_down"]
    assert line.fields["error"] == "OperationalError: server closed"  # type: ignore[attr-defined]


@pytest.mark.parametrize(("settle_s", "new_outage"), [(60.0, False), (0.0, True)])
def test_a_failure_right_after_recovery_belongs_to_the_outage_that_ended(
    caplog: pytest.LogCaptureFixture, settle_s: float, new_outage: bool
) -> None:
    outages = Outages(settle_s=settle_s)
    caplog.set_level(logging.INFO, logger="infra.outages")
    error = PoolTimeout("couldn't get a connection after 3.00 sec")
    outages.failed("postgres", error)
    outages.ok("postgres")
    # A checkout that began waiting while PostgreSQL was away times out just after it is back.
    assert outages.failed("postgres", error) is new_outage
    assert outages.is_down("postgres") is new_outage
    lines = [r.getMessage() for r in caplog.records if r.name == "infra.outages"]
    assert lines.count("dependency_down") == (2 if new_outage else 1)
    assert outages.late_failures.get("postgres", 0) == (0 if new_outage else 1)
