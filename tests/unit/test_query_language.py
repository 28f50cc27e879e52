"""The executions filter language (`projections/query_language.py`): parsing into the typed tree,
checking against the allow-list, errors with their positions, and the compiled SQL. No I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st

from projections import query_language as ql
from projections.query_language import (
    FIELDS,
    And,
    ExecutionQuery,
    Not,
    Op,
    Or,
    Order,
    Predicate,
    QueryError,
    after_sql,
    order_sql,
    parse,
    where_sql,
)


def p(name: str, op: Op, *values: Any) -> Predicate:
    return Predicate(FIELDS[name], op, values)


def where(text: str) -> Any:
    return parse(text).where


def compiled(text: str) -> tuple[str, list[Any]]:
    expr = where(text)
    assert expr is not None
    condition, params = where_sql(expr)
    return condition.as_string(None), params


def error(text: str) -> QueryError:
    with pytest.raises(QueryError) as caught:
        parse(text)
    return caught.value


FAILED = p("status", Op.EQ, "failed")
V1 = p("version", Op.EQ, 1)
V2 = p("version", Op.EQ, 2)


# ---------------------------------------------------------------- structure and precedence


def test_an_empty_filter_is_every_execution_newest_first() -> None:
    assert parse("") == ExecutionQuery(None, Order(FIELDS["started_at"], descending=True))
    assert parse("   ") == ExecutionQuery()


def test_not_binds_tighter_than_and_which_binds_tighter_than_or() -> None:
    assert where("status = 'failed' OR version = 1 AND NOT version = 2") == Or(
        (FAILED, And((V1, Not(V2))))
    )
    assert where("NOT status = 'failed' AND version = 1") == And((Not(FAILED), V1))
    assert where("version = 1 AND version = 2 OR status = 'failed'") == Or((And((V1, V2)), FAILED))


def test_parentheses_group_and_chains_stay_flat() -> None:
    assert where("(status = 'failed' OR version = 1) AND version = 2") == And(
        (Or((FAILED, V1)), V2)
    )
    assert where("NOT (status = 'failed' OR version = 1)") == Not(Or((FAILED, V1)))
    assert where("version = 1 OR version = 2 OR status = 'failed'") == Or((V1, V2, FAILED))
    assert where("((version = 1))") == V1


def test_keywords_are_case_insensitive_and_fields_may_contain_them() -> None:
    assert where("status = 'failed' and not version = 1") == And((FAILED, Not(V1)))
    assert parse("order by duration_ms asc").order == Order(FIELDS["duration_ms"], False)
    with pytest.raises(QueryError, match="unknown field 'order_x'"):
        parse("order_x = 1")
    with pytest.raises(QueryError, match="unknown field 'island'"):
        parse("island = 'x'")


def test_every_operator() -> None:
    assert where("status IN ('failed', 'canceled')") == p("status", Op.IN, "failed", "canceled")
    assert where("duration_ms BETWEEN 10 AND 20") == p("duration_ms", Op.BETWEEN, 10, 20)
    assert where("workflow_name STARTS_WITH 'bill'") == p("workflow_name", Op.STARTS_WITH, "bill")
    assert where("closed_at IS NULL") == p("closed_at", Op.IS_NULL)
    assert where("failed_node IS NOT NULL") == p("failed_node", Op.IS_NOT_NULL)
    for op in ("=", "!=", ">", ">=", "<", "<="):
        assert where(f"version {op} 3") == p("version", Op(op), 3)


def test_between_takes_its_and_before_the_boolean_and() -> None:
    assert where("version BETWEEN 1 AND 2 AND status = 'failed'") == And(
        (p("version", Op.BETWEEN, 1, 2), FAILED)
    )


def test_literals_text_with_escaped_quotes_numbers_and_times() -> None:
    assert where("workflow_name = 'it''s'") == p("workflow_name", Op.EQ, "it's")
    assert where("workflow_name = ''''") == p("workflow_name", Op.EQ, "'")
    assert where("workflow_name = ''") == p("workflow_name", Op.EQ, "")
    assert where("version >= -2") == p("version", Op.GE, -2)
    assert where("started_at > '2026-11-01T00:00:00Z'") == p(
        "started_at", Op.GT, datetime(2026, 11, 1, tzinfo=UTC)
    )
    plus_two = timezone(timedelta(hours=2))
    assert where("closed_at < '2026-11-01T10:00:00+02:00'") == p(
        "closed_at", Op.LT, datetime(2026, 11, 1, 10, tzinfo=plus_two)
    )
    # Without an offset a time is UTC.
    assert where("started_at >= '2026-11-01'") == p(
        "started_at", Op.GE, datetime(2026, 11, 1, tzinfo=UTC)
    )
    wf = uuid4()
    assert where(f"workflow_id = '{wf}'") == p("workflow_id", Op.EQ, wf)
    assert where("trigger = 'sub_workflow'") == p("trigger", Op.EQ, "sub_workflow")


def test_order_by() -> None:
    assert parse("ORDER BY closed_at").order == Order(FIELDS["closed_at"], descending=True)
    assert parse("ORDER BY started_at ASC").order == Order(FIELDS["started_at"], False)
    query = parse("status = 'failed' ORDER BY duration_ms DESC")
    assert query == ExecutionQuery(FAILED, Order(FIELDS["duration_ms"], True))


# ---------------------------------------------------------------- errors and their positions


def test_an_unknown_field_names_the_known_ones() -> None:
    e = error("status = 'failed' AND colour = 'red'")
    assert e.position == 22
    assert "unknown field 'colour'" in e.message
    for name in (*FIELDS, "attr.<name>"):
        assert name in e.message


@pytest.mark.parametrize(
    ("text", "position", "fragment"),
    [
        ("status = ", 9, "ends early; expected a value"),
        ("status = 'failed' AND", 21, "ends early"),
        ("(version = 1", 12, "expected ')'"),
        ("version = 1)", 11, "unexpected ')'"),
        ("status == 'failed'", 8, "unexpected '='"),
        ("version = 1 version = 2", 12, "unexpected 'version'"),
        ("status = 'failed", 9, "unterminated text"),
        ("version = 1 ; DROP TABLE x", 12, "unexpected character ';'"),
        ("status IN ()", 11, "expected a value"),
        ("version BETWEEN 1 OR 2", 18, "expected AND"),
        ("ORDER BY", 8, "expected a field"),
    ],
)
def test_syntax_errors_point_at_the_offending_character(
    text: str, position: int, fragment: str
) -> None:
    e = error(text)
    assert (e.position, fragment in e.message) == (position, True), e.message


@pytest.mark.parametrize(
    ("text", "position", "fragment"),
    [
        ("version = 'x'", 10, "version takes an integer"),
        ("version = 1.5", 10, "version takes an integer"),
        ("version = true", 10, "version takes an integer"),
        ("duration_ms > 99999999999999999999", 14, "takes an integer"),
        ("started_at > 'yesterday'", 13, "ISO-8601"),
        ("started_at > 5", 13, "ISO-8601"),
        ("workflow_id = 'nope'", 14, "a UUID"),
        ("workflow_name = 7", 16, "text in quotes"),
        ("status = 'weird'", 9, "status is one of 'running', 'completed'"),
        ("trigger IN ('manual', 'carrier_pigeon')", 22, "trigger is one of 'manual'"),
        ("version STARTS_WITH 'x'", 0, "STARTS_WITH does not apply to version (int)"),
        ("status > 'failed'", 0, "> does not apply to status (enum)"),
        ("workflow_id BETWEEN 'a' AND 'b'", 0, "BETWEEN does not apply to workflow_id"),
        ("version = 1 ORDER BY version", 21, "ORDER BY takes started_at, closed_at, duration_ms"),
    ],
)
def test_type_errors_point_at_the_literal_or_field(text: str, position: int, fragment: str) -> None:
    e = error(text)
    assert (e.position, fragment in e.message) == (position, True), e.message


def test_parent_id_is_parsed_but_refused_as_not_available_yet() -> None:
    e = error("status = 'failed' AND parent_id = 'x'")
    assert (e.position, e.message) == (
        22,
        "parent_id is not available yet (it comes with sub-workflows)",
    )


# ---------------------------------------------------------------- search attributes

ATTRIBUTE_ROW = (
    "EXISTS (SELECT 1 FROM rm_execution_attributes a WHERE a.execution_id = rm_executions.id"
    " AND a.workspace_id = rm_executions.workspace_id AND a.name = %s"
)


def test_an_attributes_values_are_typed_by_the_literal() -> None:
    assert compiled("attr.region = 'eu'") == (
        f'{ATTRIBUTE_ROW} AND "a"."text_value" = %s)',
        ["region", "eu"],
    )
    assert compiled("attr.amount >= 10.5") == (
        f'{ATTRIBUTE_ROW} AND "a"."num_value" >= %s)',
        ["amount", Decimal("10.5")],
    )
    assert compiled("attr.tries < 3")[1] == ["tries", Decimal(3)]
    assert compiled("attr.vip = true") == (
        f'{ATTRIBUTE_ROW} AND "a"."bool_value" = %s)',
        ["vip", True],
    )
    due = datetime(2026, 11, 1, tzinfo=UTC)
    assert compiled("attr.due > '2026-11-01'") == (
        f'{ATTRIBUTE_ROW} AND "a"."time_value" > %s)',
        ["due", due],
    )
    assert compiled("attr.code STARTS_WITH 'a_'") == (
        f'{ATTRIBUTE_ROW} AND "a"."text_value" LIKE %s)',
        ["code", "a\\_%"],
    )
    assert compiled("attr.n BETWEEN 1 AND 2")[1] == ["n", Decimal(1), Decimal(2)]
    assert compiled("attr.c IN ('x', 'y')")[1] == ["c", "x", "y"]


def test_an_attribute_is_null_when_the_execution_has_none() -> None:
    assert compiled("attr.region IS NULL") == (f"NOT {ATTRIBUTE_ROW})", ["region"])
    assert compiled("attr.region IS NOT NULL") == (f"{ATTRIBUTE_ROW})", ["region"])
    assert compiled("NOT attr.region IS NULL") == (f"{ATTRIBUTE_ROW})", ["region"])


def test_not_is_pushed_down_so_a_missing_attribute_matches_neither_way() -> None:
    # NOT (attr = 'eu') must not match an execution without the attribute (SQL: NULL).
    assert compiled("NOT attr.region = 'eu'") == (
        f'{ATTRIBUTE_ROW} AND NOT ("a"."text_value" = %s))',
        ["region", "eu"],
    )
    # De Morgan: NOT (a AND b) is (NOT a OR NOT b); plain columns keep their NOT.
    assert compiled("NOT (attr.region = 'eu' AND version = 1)") == (
        f'({ATTRIBUTE_ROW} AND NOT ("a"."text_value" = %s)) OR NOT ("version" = %s))',
        ["region", "eu", 1],
    )
    assert (
        compiled("NOT NOT attr.region = 'eu'")[0] == f'{ATTRIBUTE_ROW} AND "a"."text_value" = %s)'
    )


@pytest.mark.parametrize(
    ("text", "position", "fragment"),
    [
        ("version = 1 OR attr.Region = 'eu'", 15, "[a-z][a-z0-9_]{0,39}"),
        ("attr.vip > true", 11, "> does not apply to attr.vip with a bool value"),
        ("attr.n STARTS_WITH 1", 19, "STARTS_WITH does not apply to attr.n with a number value"),
        ("attr.c IN ('a', 1)", 16, "attr.c is compared with text here, not number"),
        ("attr.t BETWEEN '2026-11-01' AND 'x'", 32, "compared with time here, not text"),
    ],
)
def test_attribute_errors_name_the_position(text: str, position: int, fragment: str) -> None:
    e = error(text)
    assert (e.position, fragment in e.message) == (position, True), e.message


def test_a_nul_character_is_refused_where_it_is() -> None:
    e = error("workflow_name = 'a\x00b'")
    assert (e.position, e.message) == (18, "NUL characters (\\u0000) are not accepted")


def test_length_and_depth_are_bounded() -> None:
    e = error("version = 1 OR " * 300 + "version = 2")
    assert e.position == ql.MAX_QUERY_LENGTH
    deep = "NOT " * (ql.MAX_DEPTH + 1) + "version = 1"
    e = error(deep)
    assert "nested more than" in e.message
    assert parse("NOT " * ql.MAX_DEPTH + "version = 1").where is not None
    nested = "(" * 500 + "version = 1" + ")" * 500  # parentheses alone add no depth
    assert parse(nested).where == V1


# ---------------------------------------------------------------- compiled SQL


def test_compiled_sql_has_identifiers_from_the_allow_list_and_every_value_as_a_parameter() -> None:
    text, params = compiled(
        "(status IN ('failed', 'timed_out') OR closed_at IS NULL) AND NOT version BETWEEN 1 AND 3"
    )
    assert text == (
        '(("status" IN (%s, %s) OR "closed_at" IS NULL) AND NOT ("version" BETWEEN %s AND %s))'
    )
    assert params == ["failed", "timed_out", 1, 3]
    assert compiled("version != 2") == ('"version" <> %s', [2])


def test_starts_with_escapes_like_wildcards() -> None:
    assert compiled(r"workflow_name STARTS_WITH '50%_off\'") == (
        '"workflow_name" LIKE %s',
        ["50\\%\\_off\\\\%"],
    )


@pytest.mark.parametrize(
    "attempt",
    [
        "x'' OR 1=1 --",
        "x''; DROP TABLE rm_executions; --",
        'x" OR "1"="1',
        "%s",
        "x'')) OR ((''1''=''1",
    ],
)
def test_injection_attempts_stay_one_parameter(attempt: str) -> None:
    text, params = compiled(f"workflow_name = '{attempt}'")
    assert text == '"workflow_name" = %s'
    assert params == [attempt.replace("''", "'")]
    # As a status they are not one of the statuses: a 422 naming the literal, nothing run.
    e = error(f"status = '{attempt}'")
    assert e.position == 9 and "status is one of" in e.message


@given(st.text(st.characters(exclude_characters="\x00"), max_size=30))
def test_any_text_literal_round_trips_as_one_parameter(value: str) -> None:
    quoted = "'" + value.replace("'", "''") + "'"
    assert compiled(f"failed_node = {quoted}") == ('"failed_node" = %s', [value])


def test_order_and_keyset_conditions() -> None:
    started = Order(FIELDS["started_at"], descending=True)
    assert order_sql(started).as_string(None) == '"started_at" DESC, "id" DESC'
    duration = Order(FIELDS["duration_ms"], descending=False)
    assert order_sql(duration).as_string(None) == '"duration_ms" ASC NULLS LAST, "id" ASC'
    row = UUID(int=7)
    condition, params = after_sql(started, datetime(2026, 1, 1, tzinfo=UTC), row)
    assert condition.as_string(None) == '("started_at", "id") < (%s, %s)'
    assert params == [datetime(2026, 1, 1, tzinfo=UTC), row]
    condition, params = after_sql(duration, 30, row)
    assert (
        condition.as_string(None) == '(("duration_ms", "id") > (%s, %s) OR "duration_ms" IS NULL)'
    )
    assert params == [30, row]
    condition, params = after_sql(duration, None, row)
    assert condition.as_string(None) == '("duration_ms" IS NULL AND "id" > %s)'
    assert params == [row]
