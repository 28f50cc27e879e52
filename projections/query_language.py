"""The executions filter language: the `q` parameter of `GET …/executions`, a subset of
Temporal's List Filter (`../shared/API.md` part 2, "Visibility for analysts"), e.g.

    status = 'failed' AND (workflow_name STARTS_WITH 'billing' OR duration_ms > 60000)
    ORDER BY duration_ms DESC

`parse(text)` reads a filter with a `lark` LALR grammar (`GRAMMAR`) into a typed tree (the
dataclasses below), checking each node as the parser builds it: every field against the
allow-list `FIELDS` and its type (text, uuid, int, time, enum), every operator against that
type, every literal converted to the field's Python type. Any problem raises
`QueryError(message, position)`, the character offset in `text`.

`attr.<name>` names a search attribute (domain/search_attributes.py): any well-formed name is
allowed; each literal's type (text, ISO-8601 time, number, boolean) picks the column of
`rm_execution_attributes` it is compared with.

`where_sql` compiles a tree into a `psycopg.sql` condition plus its parameters: identifiers
come from the allow-list only and every value is a parameter, so no text of a filter reaches
the SQL. `order_sql` and `after_sql` give the ORDER BY and the keyset condition of the next page.

Pure: no I/O. Imported by `projections.queries` and `gateways.http.routes_executions`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any
from uuid import UUID

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken
from psycopg import sql

from domain.search_attributes import NAME, AttributeType, parse_time
from domain.statuses import ExecutionStatus

# Longer filters, and NOT/AND/OR nested deeper, are refused (the depth also bounds the
# compiler's recursion).
MAX_QUERY_LENGTH = 4000
MAX_DEPTH = 32
# PostgreSQL's bigint: an integer literal outside it is refused.
_BIGINT = range(-(2**63), 2**63)
TRIGGERS = ("manual", "webhook", "schedule", "rerun", "sub_workflow", "error_workflow")
ATTRIBUTE_PREFIX = "attr."
TIME_EXAMPLE = "'2026-11-01T00:00:00Z'"


class QueryError(Exception):
    """A filter that cannot run: what is wrong, and where (a character offset of the text)."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(message)
        self.message = message
        self.position = position


class FieldType(StrEnum):
    TEXT = "text"
    UUID = "uuid"
    INT = "int"
    TIME = "time"
    ENUM = "enum"
    # attr.<name>: a search attribute, typed by each value (text, number, boolean, time).
    ATTRIBUTE = "attribute"


@dataclass(frozen=True)
class Field:
    """A field a filter may name, and its `rm_executions` column (None: not available yet, or a
    search attribute, whose values are rows of `rm_execution_attributes`)."""

    name: str
    type: FieldType
    column: str | None
    nullable: bool = False
    choices: tuple[str, ...] = ()

    @property
    def attribute(self) -> str:
        """A search attribute's name (`region` of `attr.region`)."""
        return self.name[len(ATTRIBUTE_PREFIX) :]


FIELDS: dict[str, Field] = {
    f.name: f
    for f in (
        Field("status", FieldType.ENUM, "status", choices=tuple(ExecutionStatus)),
        Field("workflow_id", FieldType.UUID, "workflow_id"),
        Field("workflow_name", FieldType.TEXT, "workflow_name", nullable=True),
        Field("version", FieldType.INT, "version"),
        Field("trigger", FieldType.ENUM, "trigger", choices=TRIGGERS),
        Field("started_at", FieldType.TIME, "started_at"),
        Field("closed_at", FieldType.TIME, "closed_at", nullable=True),
        Field("duration_ms", FieldType.INT, "duration_ms", nullable=True),
        Field("failed_node", FieldType.TEXT, "failed_node", nullable=True),
        Field("error_code", FieldType.TEXT, "error_code", nullable=True),
        Field("parent_id", FieldType.UUID, None, nullable=True),  # comes with sub-workflows
        Field("rerun_of", FieldType.UUID, "rerun_of", nullable=True),  # migration 020
    )
}
KNOWN_FIELDS = (*FIELDS, ATTRIBUTE_PREFIX + "<name>")
ORDER_FIELDS = ("started_at", "closed_at", "duration_ms")


class Op(StrEnum):
    EQ = "="
    NE = "!="
    GT = ">"
    GE = ">="
    LT = "<"
    LE = "<="
    IN = "IN"
    BETWEEN = "BETWEEN"
    STARTS_WITH = "STARTS_WITH"
    IS_NULL = "IS NULL"
    IS_NOT_NULL = "IS NOT NULL"


_ORDERED = frozenset({Op.GT, Op.GE, Op.LT, Op.LE, Op.BETWEEN})
# The operators each type takes: = != IN IS [NOT] NULL apply to all.
_TYPE_OPS: dict[FieldType, frozenset[Op]] = {
    FieldType.TEXT: frozenset(Op),
    FieldType.INT: frozenset(Op) - {Op.STARTS_WITH},
    FieldType.TIME: frozenset(Op) - {Op.STARTS_WITH},
    FieldType.UUID: frozenset(Op) - _ORDERED - {Op.STARTS_WITH},
    FieldType.ENUM: frozenset(Op) - _ORDERED - {Op.STARTS_WITH},
    FieldType.ATTRIBUTE: frozenset(Op),  # then checked against each value's type
}
# A search attribute's operators by the type of the value it is compared with.
_ATTRIBUTE_OPS: dict[AttributeType, frozenset[Op]] = {
    AttributeType.TEXT: frozenset(Op),
    AttributeType.NUMBER: frozenset(Op) - {Op.STARTS_WITH},
    AttributeType.TIME: frozenset(Op) - {Op.STARTS_WITH},
    AttributeType.BOOL: frozenset(Op) - _ORDERED - {Op.STARTS_WITH},
}
# The `rm_execution_attributes` column of each type (integers and numbers share one).
_ATTRIBUTE_COLUMNS = {
    AttributeType.TEXT: "text_value",
    AttributeType.NUMBER: "num_value",
    AttributeType.TIME: "time_value",
    AttributeType.BOOL: "bool_value",
}


# ---------------------------------------------------------------- the tree
# Each node keeps the offset where it starts in the text (not part of its equality).


def _position() -> Any:
    return dataclasses.field(default=0, compare=False)


@dataclass(frozen=True)
class Predicate:
    """`field op values`, the values of the field's type: none for IS [NOT] NULL, two for
    BETWEEN, the prefix text for STARTS_WITH."""

    field: Field
    op: Op
    values: tuple[Any, ...] = ()
    position: int = _position()


@dataclass(frozen=True)
class Not:
    operand: Expr
    position: int = _position()


@dataclass(frozen=True)
class And:
    operands: tuple[Expr, ...]
    position: int = _position()


@dataclass(frozen=True)
class Or:
    operands: tuple[Expr, ...]
    position: int = _position()


Expr = Predicate | Not | And | Or


@dataclass(frozen=True)
class Order:
    """The list's sort: a field of `ORDER_FIELDS`; rows without a value (a running execution's
    `closed_at` and `duration_ms`) come last either way; ties go by id, the same way."""

    field: Field
    descending: bool = True

    @property
    def column(self) -> str:
        assert self.field.column is not None, "every field of ORDER_FIELDS has a column"
        return self.field.column


DEFAULT_ORDER = Order(FIELDS["started_at"], descending=True)


@dataclass(frozen=True)
class ExecutionQuery:
    """A parsed and checked filter: its condition (None: every execution) and its order."""

    where: Expr | None = None
    order: Order = DEFAULT_ORDER


# ---------------------------------------------------------------- the grammar

# Keywords are case-insensitive and outrank FIELD (priority 2); `\b` leaves fields such as
# `order_x` to FIELD. Literals: 'text' ('' inside is one quote), numbers, true/false.
GRAMMAR = r"""
?start: query
query: [expr] [order]

?expr: or_expr
?or_expr: and_expr (_OR and_expr)*
?and_expr: not_expr (_AND not_expr)*
?not_expr: negation | atom
negation: NOT not_expr
?atom: _LPAR expr _RPAR | predicate
predicate: FIELD COMPARATOR value                           -> comparison
         | FIELD _IN _LPAR value (_COMMA value)* _RPAR       -> in_list
         | FIELD _BETWEEN value _AND value                   -> between
         | FIELD _STARTS_WITH value                          -> starts_with
         | FIELD _IS _NULL                                   -> is_null
         | FIELD _IS NOT _NULL                               -> is_not_null
?value: STRING | NUMBER | TRUE | FALSE
order: _ORDER _BY FIELD [DIRECTION]

_OR.2: /or\b/i
_AND.2: /and\b/i
NOT.2: /not\b/i
_IN.2: /in\b/i
_BETWEEN.2: /between\b/i
_STARTS_WITH.2: /starts_with\b/i
_IS.2: /is\b/i
_NULL.2: /null\b/i
_ORDER.2: /order\b/i
_BY.2: /by\b/i
DIRECTION.2: /(asc|desc)\b/i
TRUE.2: /true\b/i
FALSE.2: /false\b/i
FIELD: /[a-z_][a-z0-9_]*(\.[a-z0-9_]*)?/i
COMPARATOR: /!=|<=|>=|=|<|>/
STRING: /'([^']|'')*'/
NUMBER: /-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?/
_LPAR: "("
_RPAR: ")"
_COMMA: ","

%import common.WS
%ignore WS
"""

# How an error names what the parser expected (lark's names of the terminals).
_EXPECTED = {
    "FIELD": "a field",
    "COMPARATOR": "a comparison (= != > >= < <=)",
    "STRING": "a value",
    "NUMBER": "a value",
    "TRUE": "a value",
    "FALSE": "a value",
    "DIRECTION": "ASC or DESC",
    "_OR": "OR",
    "_AND": "AND",
    "NOT": "NOT",
    "_IN": "IN",
    "_BETWEEN": "BETWEEN",
    "_STARTS_WITH": "STARTS_WITH",
    "_IS": "IS",
    "_NULL": "NULL",
    "_ORDER": "ORDER BY",
    "_BY": "BY",
    "_LPAR": "'('",
    "_RPAR": "')'",
    "_COMMA": "','",
    "$END": "the end",
}


def _at(token: Token) -> int:
    return token.start_pos or 0


def _literal(token: Token) -> str | int | float | bool:
    if token.type == "STRING":
        return token.value[1:-1].replace("''", "'")
    if token.type == "NUMBER":
        return float(token.value) if any(c in token.value for c in ".eE") else int(token.value)
    return token.type == "TRUE"


def _field(token: Token) -> Field:
    """The allow-listed field `token` names; unknown, malformed and not-yet-available names are
    refused at the token's position."""
    name = str(token.value)
    field = FIELDS.get(name)
    if field is not None and field.column is not None:
        return field
    if field is not None:
        raise QueryError(f"{name} is not available yet (it comes with sub-workflows)", _at(token))
    if name.startswith(ATTRIBUTE_PREFIX):
        if not NAME.fullmatch(name[len(ATTRIBUTE_PREFIX) :]):
            message = f"{name!r}: a search attribute's name matches [a-z][a-z0-9_]{{0,39}}"
            raise QueryError(message, _at(token))
        return Field(name, FieldType.ATTRIBUTE, None, nullable=True)
    known = ", ".join(KNOWN_FIELDS)
    raise QueryError(f"unknown field {name!r}; the known fields are {known}", _at(token))


def _time(text: str) -> datetime:
    """ISO 8601 (a trailing Z is UTC); without an offset, UTC."""
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def attribute_type(value: Any) -> AttributeType:
    """The type of a search-attribute value of a filter (as `_attribute_value` makes them)."""
    if isinstance(value, bool):
        return AttributeType.BOOL
    if isinstance(value, Decimal):
        return AttributeType.NUMBER
    if isinstance(value, datetime):
        return AttributeType.TIME
    return AttributeType.TEXT


def _attribute_value(token: Token) -> Any:
    """A literal compared with a search attribute: text in ISO-8601 form is a time (as in the
    attribute's values), numbers are exact (Decimal)."""
    if token.type == "NUMBER":
        return Decimal(token.value)
    raw = _literal(token)
    if isinstance(raw, str):
        return parse_time(raw) or raw
    return raw


def _value(field: Field, token: Token) -> Any:
    """The literal `token` as a value of `field`'s type, else a QueryError at the literal."""
    if field.type is FieldType.ATTRIBUTE:
        return _attribute_value(token)
    raw = _literal(token)
    if field.type is FieldType.INT:
        if isinstance(raw, int) and not isinstance(raw, bool) and raw in _BIGINT:
            return raw
        raise QueryError(f"{field.name} takes an integer, not {token.value}", _at(token))
    if field.type is FieldType.ENUM:
        if isinstance(raw, str) and raw in field.choices:
            return raw
        choices = ", ".join(f"'{c}'" for c in field.choices)
        raise QueryError(f"{field.name} is one of {choices}, not {token.value}", _at(token))
    if isinstance(raw, str):
        try:
            if field.type is FieldType.UUID:
                return UUID(raw)
            if field.type is FieldType.TIME:
                return _time(raw)
            return raw
        except ValueError:
            pass
    wanted = {
        FieldType.TEXT: "text in quotes",
        FieldType.UUID: "a UUID in quotes",
        FieldType.TIME: f"an ISO-8601 time in quotes, such as {TIME_EXAMPLE}",
    }[field.type]
    raise QueryError(f"{field.name} takes {wanted}, not {token.value}", _at(token))


def _predicate(name: Token, op: Op, literals: Sequence[Token] = ()) -> Predicate:
    field = _field(name)
    if op not in _TYPE_OPS[field.type]:
        takes = " ".join(o.value for o in Op if o in _TYPE_OPS[field.type])
        message = f"{op.value} does not apply to {field.name} ({field.type}); it takes {takes}"
        raise QueryError(message, _at(name))
    values = tuple(_value(field, literal) for literal in literals)
    if field.type is FieldType.ATTRIBUTE and values:
        _check_attribute_values(field, op, values, literals)
    return Predicate(field, op, values, _at(name))


def _check_attribute_values(
    field: Field, op: Op, values: tuple[Any, ...], literals: Sequence[Token]
) -> None:
    """The values compared with a search attribute are of one type, which takes `op`."""
    kind = attribute_type(values[0])
    for value, literal in zip(values[1:], literals[1:], strict=True):
        if attribute_type(value) is not kind:
            message = f"{field.name} is compared with {kind} here, not {attribute_type(value)}"
            raise QueryError(message, _at(literal))
    if op not in _ATTRIBUTE_OPS[kind]:
        takes = " ".join(o.value for o in Op if o in _ATTRIBUTE_OPS[kind])
        message = f"{op.value} does not apply to {field.name} with a {kind} value; it takes {takes}"
        raise QueryError(message, _at(literals[0]))


def _depth(expr: Expr) -> int:
    if isinstance(expr, Predicate):
        return 0
    if isinstance(expr, Not):
        return 1 + _depth(expr.operand)
    return 1 + max(_depth(operand) for operand in expr.operands)


def _shallow(expr: Not | And | Or) -> Not | And | Or:
    """`expr`, unless it nests deeper than MAX_DEPTH (its children were checked already, so the
    walk stays within MAX_DEPTH + 1 levels)."""
    if _depth(expr) > MAX_DEPTH:
        message = f"NOT, AND and OR are nested more than {MAX_DEPTH} deep"
        raise QueryError(message, expr.position)
    return expr


@v_args(inline=True)
class _Build(Transformer[Token, Any]):
    """Builds the tree bottom-up as the LALR parser reduces each rule (no recursion)."""

    def comparison(self, name: Token, op: Token, literal: Token) -> Predicate:
        return _predicate(name, Op(str(op.value)), (literal,))

    def in_list(self, name: Token, *literals: Token) -> Predicate:
        return _predicate(name, Op.IN, literals)

    def between(self, name: Token, low: Token, high: Token) -> Predicate:
        return _predicate(name, Op.BETWEEN, (low, high))

    def starts_with(self, name: Token, prefix: Token) -> Predicate:
        return _predicate(name, Op.STARTS_WITH, (prefix,))

    def is_null(self, name: Token) -> Predicate:
        return _predicate(name, Op.IS_NULL)

    def is_not_null(self, name: Token, _not: Token) -> Predicate:
        return _predicate(name, Op.IS_NOT_NULL)

    def negation(self, keyword: Token, operand: Expr) -> Not | And | Or:
        return _shallow(Not(operand, _at(keyword)))

    def and_expr(self, *operands: Expr) -> Not | And | Or:
        return _shallow(And(operands, operands[0].position))

    def or_expr(self, *operands: Expr) -> Not | And | Or:
        return _shallow(Or(operands, operands[0].position))

    def order(self, name: Token, direction: Token | None) -> Order:
        if name.value not in ORDER_FIELDS:
            message = f"ORDER BY takes {', '.join(ORDER_FIELDS)}, not {name.value!r}"
            raise QueryError(message, _at(name))
        descending = direction is None or direction.value.lower() == "desc"
        return Order(FIELDS[str(name.value)], descending)

    def query(self, where: Expr | None, order: Order | None) -> ExecutionQuery:
        return ExecutionQuery(where, order or DEFAULT_ORDER)


_PARSER = Lark(GRAMMAR, parser="lalr", lexer="basic", transformer=_Build(), maybe_placeholders=True)


def _one_of(names: Sequence[str]) -> str:
    words = sorted({_EXPECTED.get(name, name) for name in names})
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def parse(text: str) -> ExecutionQuery:
    """The filter `text` as a checked tree; QueryError (with the offset) for anything else.
    An empty text is every execution, newest first."""
    if len(text) > MAX_QUERY_LENGTH:
        raise QueryError(f"longer than {MAX_QUERY_LENGTH} characters", MAX_QUERY_LENGTH)
    if "\x00" in text:  # PostgreSQL text cannot hold it
        raise QueryError("NUL characters (\\u0000) are not accepted", text.index("\x00"))
    try:
        parsed = _PARSER.parse(text)
    except UnexpectedCharacters as exc:
        position = exc.pos_in_stream or 0
        if text[position] == "'":
            message = "unterminated text (a quote inside text is written '')"
        else:
            message = f"unexpected character {text[position]!r}"
        raise QueryError(message, position) from None
    except UnexpectedToken as exc:
        token = exc.token
        expected = _one_of(sorted(exc.expected))
        if token.type == "$END":
            raise QueryError(f"the filter ends early; expected {expected}", len(text)) from None
        message = f"unexpected {token.value!r}; expected {expected}"
        raise QueryError(message, _at(token)) from None
    except UnexpectedInput:  # the end of the text, where more was expected
        raise QueryError("the filter ends early", len(text)) from None
    assert isinstance(parsed, ExecutionQuery)
    return parsed


# ---------------------------------------------------------------- SQL

_COMPARISONS = {Op.EQ: "=", Op.NE: "<>", Op.GT: ">", Op.GE: ">=", Op.LT: "<", Op.LE: "<="}
_ID = sql.Identifier("id")


def _column(field: Field) -> sql.Identifier:
    assert field.column is not None, "parse() refuses fields without a column"
    return sql.Identifier(field.column)


def _like_prefix(prefix: str) -> str:
    """A LIKE pattern matching texts that start with `prefix` (its wildcards escaped)."""
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


def _compile(expr: Expr, params: list[Any], negated: bool = False) -> sql.Composable:
    """`expr` (its negation if `negated`) as SQL; its values appended to `params` in the order
    of their placeholders. A NOT is pushed down to the predicates (De Morgan's laws hold in
    SQL's three-valued logic), where a search attribute's predicate needs it: `EXISTS` of the
    attribute's row is false, not unknown, when the execution has no such attribute."""
    if isinstance(expr, Not):
        return _compile(expr.operand, params, not negated)
    if isinstance(expr, And | Or):
        conjunction = isinstance(expr, And) != negated
        joiner = sql.SQL(" AND " if conjunction else " OR ")
        parts = [_compile(o, params, negated) for o in expr.operands]
        return sql.SQL("({})").format(joiner.join(parts))
    if expr.field.type is FieldType.ATTRIBUTE:
        return _attribute_condition(expr, params, negated)
    condition = _condition(_column(expr.field), expr, params)
    return sql.SQL("NOT ({})").format(condition) if negated else condition


# A search attribute's row of the execution being filtered (`rm_executions` is the outer table).
_ATTRIBUTE_ROW = sql.SQL(
    "EXISTS (SELECT 1 FROM rm_execution_attributes a WHERE a.execution_id = rm_executions.id"
    " AND a.workspace_id = rm_executions.workspace_id AND a.name = %s{})"
)


def _attribute_condition(expr: Predicate, params: list[Any], negated: bool) -> sql.Composable:
    """`attr.<name> …` as an EXISTS over `rm_execution_attributes`, whose indexes (workspace,
    name, value) serve equality and ranges. An execution without the attribute, or whose value
    is of another type, matches neither the predicate nor its negation (as a NULL column would),
    except IS [NOT] NULL, which asks whether it has one."""
    params.append(expr.field.attribute)
    if expr.op in (Op.IS_NULL, Op.IS_NOT_NULL):
        has = (expr.op is Op.IS_NOT_NULL) != negated
        exists = _ATTRIBUTE_ROW.format(sql.SQL(""))
        return exists if has else sql.SQL("NOT {}").format(exists)
    kind = attribute_type(expr.values[0])
    column = sql.Identifier("a", _ATTRIBUTE_COLUMNS[kind])
    condition = _condition(column, expr, params)
    if negated:
        condition = sql.SQL("NOT ({})").format(condition)
    return _ATTRIBUTE_ROW.format(sql.SQL(" AND {}").format(condition))


def _condition(column: sql.Composable, expr: Predicate, params: list[Any]) -> sql.Composable:
    """`column op values` of a predicate (not IS [NOT] NULL of an attribute)."""
    op, values = expr.op, expr.values
    if op is Op.IS_NULL:
        return sql.SQL("{} IS NULL").format(column)
    if op is Op.IS_NOT_NULL:
        return sql.SQL("{} IS NOT NULL").format(column)
    if op is Op.STARTS_WITH:
        params.append(_like_prefix(values[0]))
        return sql.SQL("{} LIKE {}").format(column, sql.Placeholder())
    params.extend(values)
    if op is Op.IN:
        placeholders = sql.SQL(", ").join([sql.Placeholder()] * len(values))
        return sql.SQL("{} IN ({})").format(column, placeholders)
    if op is Op.BETWEEN:
        return sql.SQL("{} BETWEEN {} AND {}").format(column, sql.Placeholder(), sql.Placeholder())
    return sql.SQL("{} {} {}").format(column, sql.SQL(_COMPARISONS[op]), sql.Placeholder())


def where_sql(expr: Expr) -> tuple[sql.Composable, list[Any]]:
    """The condition `expr` and its parameters. SQL semantics: a comparison with a field that
    has no value (NULL) is not true, and neither is its NOT: `IS NULL` asks for those rows."""
    params: list[Any] = []
    return _compile(expr, params), params


def order_sql(order: Order) -> sql.Composable:
    """The ORDER BY terms of `order` (`started_at` has a value in every row: no NULLS clause,
    so its indexes serve both ways)."""
    direction = sql.SQL("DESC" if order.descending else "ASC")
    nulls = sql.SQL(" NULLS LAST" if order.field.nullable else "")
    return sql.SQL("{} {}{}, {} {}").format(_column(order.field), direction, nulls, _ID, direction)


def after_sql(order: Order, value: Any, row_id: UUID) -> tuple[sql.Composable, list[Any]]:
    """The rows that come after the row (`value` of the sort field, `row_id`) in `order`."""
    column = _column(order.field)
    beyond = sql.SQL("<" if order.descending else ">")
    if value is None:  # in the tail of rows without a value
        return sql.SQL("({} IS NULL AND {} {} %s)").format(column, _ID, beyond), [row_id]
    keyset = sql.SQL("({}, {}) {} (%s, %s)").format(column, _ID, beyond)
    if order.field.nullable:
        keyset = sql.SQL("({} OR {} IS NULL)").format(keyset, column)
    return keyset, [value, row_id]
