"""Reading exports back (`GET …/executions/export`) the way a client would, for the tests of
the export: NDJSON line by line, CSV with the `csv` module, each row decoded by the rules the
export documents (projections/export.py) into the list item it was written from."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

# How the tests know each list-item field's kind (the export itself knows the jsonb ones from
# the database): everything else is text.
JSON_FIELDS = frozenset({"input", "output", "error", "search_attributes"})
INT_FIELDS = frozenset({"version", "duration_ms"})


def parse_ndjson(body: bytes) -> list[dict[str, Any]]:
    text = body.decode()
    assert text == "" or text.endswith("\n"), "every line ends with a newline"
    return [json.loads(line) for line in text.splitlines()]


def decode_cell(name: str, cell: str) -> Any:
    """The list item's value of field `name` from its CSV cell: empty is NULL, JSON fields are
    JSON text, integers are digits, and a text cell loses one leading apostrophe."""
    if cell == "":
        return None
    if name in JSON_FIELDS:
        return json.loads(cell)
    if name in INT_FIELDS:
        return int(cell)
    return cell[1:] if cell.startswith("'") else cell


def parse_csv(body: bytes) -> tuple[list[str], list[dict[str, Any]]]:
    """The header, and each row as the list item it encodes."""
    rows = list(csv.reader(io.StringIO(body.decode(), newline="")))
    header, records = rows[0], rows[1:]
    items = [
        {name: decode_cell(name, cell) for name, cell in zip(header, record, strict=True)}
        for record in records
    ]
    return header, items
