"""The encodings of the executions export (projections/export.py), without I/O: the CSV header
is the list item's fields, cells follow the documented rules (NULL empty, jsonb fields as compact
JSON, formula starts neutralised), both formats read back to the list items exactly, and the
fetch size shrinks for large rows."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest
from exports import JSON_FIELDS, parse_csv, parse_ndjson

from projections import export, queries

T0 = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
NASTY_TEXTS = [
    '=HYPERLINK("http://evil", "x")',
    "+1+2",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(A1)",
    "\tindented",
    "\rreturn",
    "'quoted",
    'plain, with "quotes" and a\nnewline',
    "ünïcödé ✓",
]


def row(name: str, **columns: Any) -> dict[str, Any]:
    """An `rm_executions` row as psycopg returns it (jsonb decoded)."""
    values = {
        "id": uuid4(),
        "workspace_id": uuid4(),
        "workflow_id": uuid4(),
        "workflow_name": name,
        "version": 2,
        "status": "failed",
        "trigger": "manual",
        "input": {"formula": "=1+1", "n": -5, "list": [1, None, "x"], "deep": {"a": "ü"}},
        "output": None,
        "error": {"type": "http_status", "message": "HTTP 500", "node_id": "call"},
        "started_at": T0,
        "closed_at": T0 + timedelta(milliseconds=1500),
        "duration_ms": 1500,
        "search_attributes": {"region": "eu"},
        "callback": None,
        "event_version": 5,
    }
    return values | columns


ROWS = [row(name) for name in NASTY_TEXTS] + [
    row("running", status="running", closed_at=None, duration_ms=None, error=None),
    row("scalar inputs", input="=text", output=-3),
    row("json null input", input=None, output=[]),
]
JSONB = frozenset({"input", "output", "error", "search_attributes", "callback"})


def test_the_csv_header_is_the_list_items_fields_in_order() -> None:
    header, _ = export.csv_encoder(JSONB)
    [fields] = list(csv.reader(io.StringIO(header.decode())))
    assert fields == list(queries.list_item(ROWS[0])) == list(export.item_fields())


@pytest.mark.parametrize("text", NASTY_TEXTS)
def test_text_cells_that_a_spreadsheet_would_run_are_neutralised(text: str) -> None:
    cell = export.csv_cell(text, is_json=False)
    if text[0] in "=+-@\t\r'":
        assert cell == "'" + text
    else:
        assert cell == text


def test_cells_null_json_and_numbers() -> None:
    assert export.csv_cell(None, is_json=False) == ""
    assert export.csv_cell(None, is_json=True) == ""
    assert export.csv_cell({"a": [1, "=x"]}, is_json=True) == '{"a":[1,"=x"]}'
    assert export.csv_cell("=x", is_json=True) == '"=x"'  # a JSON string: not a formula
    assert export.csv_cell(-5, is_json=True) == "-5"  # JSON begins with - only as a number
    assert export.csv_cell(1500, is_json=False) == "1500"
    assert export.csv_cell(True, is_json=False) == "true"
    assert export.csv_cell("ünï", is_json=False) == "ünï"


def test_csv_reads_back_to_the_list_items() -> None:
    header, encode = export.csv_encoder(JSONB)
    fields, items = parse_csv(header + encode(ROWS))
    assert fields == list(export.item_fields())
    assert items == [queries.list_item(r) for r in ROWS]
    assert set(JSON_FIELDS) & set(fields) >= {"input", "output", "error"}


def test_csv_writes_a_string_input_unlike_a_number() -> None:
    _, encode = export.csv_encoder(JSONB)
    text, number = row("x", input="5"), row("x", input=5)
    assert encode([text]) != encode([number])


def test_ndjson_is_one_compact_list_item_per_line() -> None:
    body = export.ndjson(ROWS)
    items = [queries.list_item(r) for r in ROWS]
    compact = [json.dumps(i, separators=(",", ":"), ensure_ascii=False) for i in items]
    assert body.decode() == "".join(line + "\n" for line in compact)
    assert parse_ndjson(body) == items  # text as it is: no neutralising in JSON


def test_nothing_encodes_to_nothing() -> None:
    _, encode = export.csv_encoder(JSONB)
    assert encode([]) == b"" and export.ndjson([]) == b""


@pytest.mark.parametrize(
    ("rows", "size", "expected"),
    [
        (1000, export.CHUNK_BYTES // 4, export.FETCH_ROWS),  # small rows: the most
        (1000, 4 * export.CHUNK_BYTES, 250),  # rows 4 times larger: a quarter as many
        (10, 50 * export.CHUNK_BYTES, 1),  # rows larger than a chunk: one at a time
        (0, 0, 1),
    ],
)
def test_the_next_fetch_keeps_chunks_near_chunk_bytes(rows: int, size: int, expected: int) -> None:
    assert export.next_fetch(rows, size) == expected


@pytest.mark.parametrize(
    "text",
    ['{"a": [1, 2.5, null, true], "b": {"c": "ü\\u00e9\\n"}}', '"=x"', "-5", "null", "[]", "{}"],
)
def test_json_from_postgresql_loads_as_json_loads_does(text: str) -> None:
    assert export.load_json(text.encode()) == export.load_json(text) == json.loads(text)
