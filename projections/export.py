"""Every execution a filter matches, as NDJSON or CSV, streamed in chunks with constant memory
(`GET …/executions/export`): the list's statement without its LIMIT
(`queries.list_statement(limit=None)`, so the same filters, tenancy and ORDER BY), read through
a server-side cursor in one transaction (so the export is one snapshot, as of its start), at
most `FETCH_ROWS` rows and about `CHUNK_BYTES` at a time, each row the list item
`queries.list_item` makes of it. Memory holds one chunk's rows and encodings (a few times
CHUNK_BYTES) whatever the export's size.

Encodings (one line or record per execution, the list item's fields in its order):
- NDJSON (`application/x-ndjson`): one compact JSON object per line.
- CSV (`text/csv; charset=utf-8`, RFC 4180, `\\r\\n`): a header row of the field names, then
  one row per execution. NULL is an empty cell; a field read from a `jsonb` column (input,
  output, error, and any such field the list item gains) is compact JSON text (`"x"` for the
  string x, so `5` and `"5"` differ); other text is written as it is, except that a text cell
  beginning with `=`, `+`, `-`, `@`, a tab or a carriage return — which a spreadsheet would
  run as a formula — gets a leading apostrophe `'` (OWASP's advice against CSV injection).
  So that this can be undone, a text beginning with an apostrophe gets one too: a reader
  drops one leading apostrophe from a text cell. JSON cells are left alone: JSON text only
  begins with one of those characters as a negative number, which no spreadsheet runs.

Imported by `gateways.http.routes_export`.
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from enum import StrEnum
from functools import cache
from typing import Any
from uuid import UUID

from psycopg import postgres
from psycopg.types.json import set_json_loads

from infra.db import DictConnection
from projections import queries

# Rows fetched at once (one FETCH round trip, one chunk written): FIRST_FETCH_ROWS, then as many
# as keep a chunk near CHUNK_BYTES at the size of the last rows, at most FETCH_ROWS.
FIRST_FETCH_ROWS = 100
FETCH_ROWS = 1000
CHUNK_BYTES = 256 * 1024
CURSOR_NAME = "linkflow_export"
_JSONB = postgres.types["jsonb"].oid
# Text cells a spreadsheet could run as a formula (and, to keep the rule reversible, those
# already beginning with an apostrophe), and the apostrophe put before them.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "'")
NEUTRALISER = "'"

Chunk = tuple[bytes, int]  # encoded bytes, and how many executions they hold
Encoder = Callable[[Sequence[dict[str, Any]]], bytes]


class Format(StrEnum):
    NDJSON = "ndjson"
    CSV = "csv"


MEDIA_TYPES: dict[Format, tuple[str, str | None]] = {
    Format.NDJSON: ("application/x-ndjson", None),
    Format.CSV: ("text/csv", "utf-8"),
}


@cache
def item_fields() -> tuple[str, ...]:
    """The fields of a list item, in order (the CSV header): those `queries.list_item` makes."""
    return tuple(queries.list_item(defaultdict(lambda: None)))


_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_raw_decode = json.JSONDecoder().raw_decode


def load_json(data: str | bytes) -> Any:
    """A json/jsonb value as PostgreSQL sends it (one JSON text, nothing around it) without
    `json.loads`'s per-call detection of the encoding and of trailing text: a third of its
    time, for the three or four such values of every row."""
    return _raw_decode(data.decode() if isinstance(data, bytes) else data)[0]


def text_cell(value: str) -> str:
    """A text cell, with formula starts neutralised (see the module's docstring)."""
    return NEUTRALISER + value if value.startswith(FORMULA_STARTS) else value


def csv_cell(value: Any, is_json: bool) -> str:
    """One CSV cell: empty for NULL, compact JSON for a jsonb field or a non-text value."""
    if value is None:
        return ""
    if isinstance(value, str) and not is_json:
        return text_cell(value)
    return _dumps(value)


def ndjson(rows: Sequence[dict[str, Any]]) -> bytes:
    return "".join([_dumps(queries.list_item(row)) + "\n" for row in rows]).encode()


def csv_encoder(json_fields: frozenset[str]) -> tuple[bytes, Encoder]:
    """The header row, and the encoder of rows whose `json_fields` come from jsonb columns."""
    fields = item_fields()
    flags = [name in json_fields for name in fields]

    def lines(records: Iterable[Iterable[str]]) -> bytes:
        out = io.StringIO()
        csv.writer(out).writerows(records)
        return out.getvalue().encode()

    def encode(rows: Sequence[dict[str, Any]]) -> bytes:
        items = [queries.list_item(row) for row in rows]
        return lines(
            [csv_cell(item[name], flag) for name, flag in zip(fields, flags, strict=True)]
            for item in items
        )

    return lines([fields]), encode


def next_fetch(rows: int, size: int) -> int:
    """Rows to fetch next, after `rows` rows encoded to `size` bytes: a chunk near CHUNK_BYTES,
    1..FETCH_ROWS rows."""
    return max(1, min(FETCH_ROWS, CHUNK_BYTES * rows // max(size, 1)))


async def export_chunks(
    conn: DictConnection, workspace_id: UUID, fmt: Format, **filters: Any
) -> AsyncGenerator[Chunk, None]:
    """The matching executions of the workspace (`filters` as `queries.list_statement` takes
    them), encoded in `fmt`, chunk by chunk: at least one chunk, the first with the CSV header
    (which may be all it holds when nothing matches). Holds one transaction and a server-side
    cursor of `conn` until it is exhausted or closed (`contextlib.aclosing`): close it before
    giving `conn` back."""
    statement, params = queries.list_statement(workspace_id, limit=None, **filters)
    encode: Encoder
    async with conn.transaction(), conn.cursor(name=CURSOR_NAME) as cur:
        set_json_loads(load_json, cur)
        await cur.execute(statement, params)
        head, encode = b"", ndjson
        if fmt is Format.CSV:
            jsonb = frozenset(c.name for c in cur.description or () if c.type_code == _JSONB)
            head, encode = csv_encoder(jsonb)
        size, first = FIRST_FETCH_ROWS, True
        while True:
            rows = await cur.fetchmany(size)
            if not (rows or first):
                return
            data = encode(rows)
            yield (head + data if first else data), len(rows)
            if len(rows) < size:  # the cursor is exhausted
                return
            size, first = next_fetch(len(rows), len(data)), False
