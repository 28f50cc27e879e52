"""`projections.query_match`: the filter language evaluated in Python with SQL's three-valued
logic, operator by operator (tests/integration/test_query_match_pg.py checks that it agrees
with PostgreSQL on projected rows)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest

from projections.query_language import parse
from projections.query_match import matches, truth

T0 = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
WF = uuid4()


def row(**values: Any) -> dict[str, Any]:
    """A running execution's row (closed_at, duration_ms, error_code, failed_node NULL)."""
    base: dict[str, Any] = {
        "id": uuid4(),
        "status": "running",
        "workflow_id": WF,
        "workflow_name": "billing-daily",
        "version": 1,
        "trigger": "manual",
        "started_at": T0,
        "closed_at": None,
        "duration_ms": None,
        "error_code": None,
        "failed_node": None,
    }
    return base | values


RUNNING = row()
FAILED = row(
    status="failed",
    closed_at=T0 + timedelta(seconds=5),
    duration_ms=5000,
    error_code="http_status",
    failed_node="call",
)


def check(q: str, r: dict[str, Any]) -> bool | None:
    where = parse(q).where
    assert where is not None
    return truth(where, r)


@pytest.mark.parametrize(
    ("q", "r", "expected"),
    [
        # =  and  !=
        ("status = 'failed'", FAILED, True),
        ("status = 'failed'", RUNNING, False),
        ("status != 'failed'", RUNNING, True),
        (f"workflow_id = '{WF}'", RUNNING, True),
        (f"workflow_id != '{WF}'", RUNNING, False),
        ("error_code = 'http_status'", RUNNING, None),  # NULL: unknown
        ("error_code != 'http_status'", RUNNING, None),  # not true either
        # >  >=  <  <=
        ("duration_ms > 4999", FAILED, True),
        ("duration_ms > 5000", FAILED, False),
        ("duration_ms >= 5000", FAILED, True),
        ("duration_ms < 5000", FAILED, False),
        ("duration_ms <= 5000", FAILED, True),
        ("duration_ms < 1", RUNNING, None),
        ("version >= 1", RUNNING, True),
        ("started_at > '2026-11-02T07:59:59Z'", RUNNING, True),
        ("started_at >= '2026-11-02T10:00:00+02:00'", RUNNING, True),  # the same instant
        ("started_at < '2026-11-02T10:00:00+02:00'", RUNNING, False),
        ("started_at <= '2026-11-02T08:00:00'", RUNNING, True),  # no offset: UTC
        ("closed_at > '2000-01-01T00:00:00Z'", RUNNING, None),
        # text orders by code point (the C collations): upper case before lower case
        ("workflow_name > 'Zebra'", RUNNING, True),
        ("workflow_name < 'billing-daily0'", RUNNING, True),
        ("workflow_name <= 'billing'", RUNNING, False),
        # IN
        ("status IN ('failed', 'canceled')", FAILED, True),
        ("status IN ('failed', 'canceled')", RUNNING, False),
        ("failed_node IN ('call')", RUNNING, None),
        # BETWEEN: both ends included; reversed bounds match nothing
        ("duration_ms BETWEEN 5000 AND 6000", FAILED, True),
        ("duration_ms BETWEEN 4000 AND 5000", FAILED, True),
        ("duration_ms BETWEEN 5001 AND 6000", FAILED, False),
        ("duration_ms BETWEEN 6000 AND 4000", FAILED, False),
        ("duration_ms BETWEEN 0 AND 9", RUNNING, None),
        ("started_at BETWEEN '2026-11-02T08:00:00Z' AND '2026-11-02T08:00:00Z'", RUNNING, True),
        # STARTS_WITH: a prefix; LIKE's wildcards are literal characters
        ("workflow_name STARTS_WITH 'billing'", RUNNING, True),
        ("workflow_name STARTS_WITH ''", RUNNING, True),
        ("workflow_name STARTS_WITH 'billing_'", RUNNING, False),
        ("workflow_name STARTS_WITH 'bill%'", RUNNING, False),
        ("workflow_name STARTS_WITH 'Billing'", RUNNING, False),  # case matters
        ("failed_node STARTS_WITH 'c'", RUNNING, None),
        # IS NULL / IS NOT NULL: never unknown
        ("closed_at IS NULL", RUNNING, True),
        ("closed_at IS NULL", FAILED, False),
        ("closed_at IS NOT NULL", FAILED, True),
        ("NOT closed_at IS NULL", RUNNING, False),
    ],
)
def test_each_operator(q: str, r: dict[str, Any], expected: bool | None) -> None:
    assert check(q, r) is expected
    assert matches(parse(q).where, r) is (expected is True)


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        # NOT unknown is unknown: a running execution matches neither the test nor its negation.
        ("NOT error_code = 'http_status'", None),
        ("NOT NOT error_code = 'http_status'", None),
        ("NOT status = 'failed'", True),
        # AND: false wins over unknown; otherwise unknown wins over true.
        ("error_code = 'x' AND status = 'failed'", False),
        ("error_code = 'x' AND status = 'running'", None),
        ("status = 'running' AND version = 1", True),
        ("NOT (error_code = 'x' AND status = 'failed')", True),
        ("NOT (error_code = 'x' AND status = 'running')", None),
        # OR: true wins over unknown; otherwise unknown wins over false.
        ("error_code = 'x' OR status = 'running'", True),
        ("error_code = 'x' OR status = 'failed'", None),
        ("status = 'failed' OR version = 2", False),
        ("NOT (error_code = 'x' OR status = 'failed')", None),
        # Precedence: NOT, then AND, then OR.
        ("status = 'failed' AND version = 1 OR trigger = 'manual'", True),
        ("status = 'failed' AND (version = 1 OR trigger = 'manual')", False),
    ],
)
def test_three_valued_logic(q: str, expected: bool | None) -> None:
    assert check(q, RUNNING) is expected
    assert matches(parse(q).where, RUNNING) is (expected is True)


def test_no_filter_matches_every_row_and_order_by_changes_nothing() -> None:
    assert matches(None, RUNNING) and matches(None, FAILED)
    assert matches(parse("ORDER BY duration_ms ASC").where, RUNNING)
    ordered = parse("status = 'failed' ORDER BY closed_at DESC").where
    assert matches(ordered, FAILED) and not matches(ordered, RUNNING)


def test_a_row_is_read_by_column_and_ids_compare_as_uuids() -> None:
    other = UUID(int=WF.int ^ 1)
    assert not matches(parse(f"workflow_id = '{other}'").where, RUNNING)
    assert matches(parse(f"workflow_id IN ('{other}', '{WF}')").where, RUNNING)
