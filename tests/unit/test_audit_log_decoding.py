"""The event log's fast decoding (`projections.audit_log._decoded`, `fast_entry`) on states the
event store's own transcoder writes: a UUID, a datetime and a decimal at any depth come out as
the history renders them (text, ISO form, the decimal's text); an unknown transcoded type, JSON
orjson refuses and an event nested too deeply make `fast_entry` give up (None), so the page
falls back to decoding the domain event."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import uuid4

from eventsourcing.persistence import DatetimeAsISO, DecimalAsStr, JSONTranscoder, UUIDAsHex

from projections import audit_log
from projections.queries import HISTORY_MAX_DEPTH

ID = uuid4()
AT = datetime(2026, 11, 27, 23, 30, 1, 123456, tzinfo=UTC)


def transcoder() -> JSONTranscoder:
    t = JSONTranscoder()
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()):
        t.register(transcoding)
    return t


def row(state: bytes, topic: str = "domain.execution:Execution.NodeCompleted") -> dict[str, Any]:
    return {"originator_version": 3, "topic": topic, "state": state}


def test_transcoded_values_at_the_top_level_and_deeper_are_made_plain() -> None:
    state = transcoder().encode(
        {
            "timestamp": AT,
            "workspace_id": ID,
            "output": {"ids": [ID, {"at": AT}], "amount": Decimal("10.50"), "n": 1.5},
            "note": 'a "_type_" inside a string is text',
        }
    )
    assert audit_log._decoded(state) == {
        "timestamp": AT.isoformat(),
        "workspace_id": str(ID),
        "output": {"ids": [str(ID), {"at": AT.isoformat()}], "amount": "10.50", "n": 1.5},
        "note": 'a "_type_" inside a string is text',
    }


def test_a_fast_entry_has_the_envelope_taken_out_and_the_type_from_the_topic() -> None:
    state = transcoder().encode(
        {"timestamp": AT, "originator_id": ID, "originator_version": 3, "node_id": "a"}
    )
    assert audit_log.fast_entry(row(state)) == {
        "workspace_id": None,
        "version": 3,
        "type": "NodeCompleted",
        "recorded_at": AT.isoformat(),
        "data": {"node_id": "a"},
    }


def test_what_it_cannot_be_sure_of_is_left_to_the_domain_decoding() -> None:
    unknown = b'{"timestamp": {"_type_": "datetime_iso", "_data_": "x"},'
    unknown += b' "v": {"_type_": "tuple_as_list", "_data_": [1]}}'
    assert audit_log.fast_entry(row(unknown)) is None
    deep_unknown = b'{"timestamp": "t", "v": [[{"_type_": "set", "_data_": []}]]}'
    assert audit_log.fast_entry(row(deep_unknown)) is None
    assert audit_log.fast_entry(row(b'{"timestamp": "t", "v": NaN')) is None
    assert audit_log.fast_entry(row(b'{"timestamp": "t", "v": 1' + b"0" * 30 + b"}")) is None
    deep = b'{"timestamp": "t", "v": ' + b"[" * HISTORY_MAX_DEPTH + b"]" * HISTORY_MAX_DEPTH
    assert audit_log.fast_entry(row(deep + b"}")) is None
    assert audit_log.fast_entry(row(b'{"v": 1}')) is None  # no timestamp: not an event


def test_a_page_with_an_integer_orjson_cannot_encode_is_still_answered() -> None:
    answer = {"items": [{"data": {"big": 10**30}}], "next_after": 1, "head": 1}
    body = audit_log.encode_page(answer)
    assert body == b'{"items":[{"data":{"big":1000000000000000000000000000000}}],' + (
        b'"next_after":1,"head":1}'
    )
