"""The executions filter language evaluated in Python: `matches(expr, row)` says whether a row of
`rm_executions` satisfies a parsed filter (`projections.query_language`) exactly as PostgreSQL
would with `where_sql(expr)`, so the live feed (`gateways.http.live`) can pick the status
changes a subscriber asked for without a query per subscriber.

SQL's three-valued logic: a comparison with a NULL column (a running execution's `closed_at`)
is unknown; NOT unknown is unknown; AND is false if any operand is false, else unknown if any is
unknown; OR is true if any operand is true, else unknown if any is unknown; only true matches.
`BETWEEN a AND b` is `>= a AND <= b` (nothing when a > b); `STARTS_WITH` is a prefix test (the
LIKE pattern `where_sql` builds escapes its wildcards). Text is ordered by code point, as
PostgreSQL orders it under the C / C.UTF-8 collations LinkFlow's databases use.

Search attributes (`attr.<name>`) are read from the row's `search_attributes`; an execution
without the attribute, or with a value of another type than the literal's, is unknown.

`row` maps column names to the values psycopg reads (UUID, datetime, int, str, None). Pure: no
I/O. Imported by `gateways.http.live` and the tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from domain.search_attributes import AttributeType
from projections.execution_rows import attribute_values
from projections.query_language import (
    And,
    Expr,
    FieldType,
    Not,
    Op,
    Or,
    Predicate,
    attribute_type,
)

# True, False, or None for SQL's unknown.
Truth = bool | None

_COMPARE: dict[Op, Callable[[Any, Any], bool]] = {
    Op.EQ: lambda a, b: a == b,
    Op.NE: lambda a, b: a != b,
    Op.GT: lambda a, b: a > b,
    Op.GE: lambda a, b: a >= b,
    Op.LT: lambda a, b: a < b,
    Op.LE: lambda a, b: a <= b,
}


def matches(expr: Expr | None, row: Mapping[str, Any]) -> bool:
    """True when `row` satisfies `expr` (None: every row); unknown does not match."""
    return expr is None or truth(expr, row) is True


def truth(expr: Expr, row: Mapping[str, Any]) -> Truth:
    """`expr` of `row` in three-valued logic (None: unknown)."""
    if isinstance(expr, Not):
        inner = truth(expr.operand, row)
        return None if inner is None else not inner
    if isinstance(expr, And):
        return _and(truth(operand, row) for operand in expr.operands)
    if isinstance(expr, Or):
        return _or(truth(operand, row) for operand in expr.operands)
    return _predicate(expr, row)


def _and(values: Iterable[Truth]) -> Truth:
    unknown = False
    for value in values:
        if value is False:
            return False
        unknown = unknown or value is None
    return None if unknown else True


def _or(values: Iterable[Truth]) -> Truth:
    unknown = False
    for value in values:
        if value is True:
            return True
        unknown = unknown or value is None
    return None if unknown else False


def _value(p: Predicate, row: Mapping[str, Any]) -> Any:
    """The value `p` tests: the field's column, or a search attribute's value as the column of
    the literal's type holds it (None when the execution has no such attribute, or one of
    another type: `where_sql`'s EXISTS then finds no row, which the pushed-down NOT of
    `where_sql` makes behave as unknown does here)."""
    if p.field.type is not FieldType.ATTRIBUTE:
        assert p.field.column is not None, "parse() refuses fields without a column"
        return row[p.field.column]
    raw = (row.get("search_attributes") or {}).get(p.field.attribute)
    if raw is None or p.op in (Op.IS_NULL, Op.IS_NOT_NULL):
        return raw
    text, number, time, boolean = attribute_values(raw)
    return {
        AttributeType.TEXT: text,
        AttributeType.NUMBER: number,
        AttributeType.TIME: time,
        AttributeType.BOOL: boolean,
    }[attribute_type(p.values[0])]


def _predicate(p: Predicate, row: Mapping[str, Any]) -> Truth:
    value = _value(p, row)
    if p.op is Op.IS_NULL:
        return value is None
    if p.op is Op.IS_NOT_NULL:
        return value is not None
    if value is None:
        return None
    if p.op is Op.IN:
        return value in p.values
    if p.op is Op.BETWEEN:
        low, high = p.values
        return bool(low <= value <= high)
    if p.op is Op.STARTS_WITH:
        return bool(value.startswith(p.values[0]))
    return _COMPARE[p.op](value, p.values[0])
