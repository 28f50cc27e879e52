"""The `events` stream entry format (`infra.eventlog.pack` / `unpack`): a run of events survives
the round trip byte for byte, and entries that are not well-formed packs are refused."""

from __future__ import annotations

from uuid import uuid4

import pytest

from infra.eventlog import LoggedEvent, pack, unpack


def run(n: int, start: int = 41) -> list[LoggedEvent]:
    return [
        LoggedEvent(
            position=start + i,
            originator_id=uuid4(),
            originator_version=i + 1,
            topic=f"domain.execution:Execution.Node{'Scheduled' if i % 2 else 'Completed'}é",
            state=bytes(range(256)) * i + b'{"k": "v"}',
        )
        for i in range(n)
    ]


def as_stream(fields: dict[str, bytes]) -> dict[bytes, bytes]:
    """What a consumer gets back from Redis: byte keys."""
    return {k.encode(): v for k, v in fields.items()}


@pytest.mark.parametrize("n", [1, 2, 100])
def test_a_run_of_events_round_trips(n: int) -> None:
    events = run(n)
    assert unpack(as_stream(pack(events))) == events


def test_the_entry_names_its_first_and_last_position() -> None:
    fields = pack(run(3, start=7))
    assert (fields["first"], fields["last"]) == (b"7", b"9")


@pytest.mark.parametrize(
    "fields",
    [
        {b"pos": b"not-a-number"},
        {b"garbage": b"\xff"},
        {b"first": b"x", b"last": b"1", b"events": b""},
        {b"first": b"1", b"last": b"1", b"events": b""},
    ],
)
def test_entries_that_are_not_packs_are_refused(fields: dict[bytes, bytes]) -> None:
    with pytest.raises(ValueError):
        unpack(fields)


def test_a_truncated_pack_is_refused() -> None:
    fields = as_stream(pack(run(3)))
    fields[b"events"] = fields[b"events"][:-5]
    with pytest.raises(ValueError):
        unpack(fields)


def test_a_pack_whose_positions_disagree_with_its_fields_is_refused() -> None:
    fields = as_stream(pack(run(3, start=10)))
    fields[b"last"] = b"13"
    with pytest.raises(ValueError):
        unpack(fields)


def test_a_topic_that_is_not_utf8_is_refused() -> None:
    fields = as_stream(pack(run(1)))
    header = 8 + 8 + 16 + 2 + 4
    data = bytearray(fields[b"events"])
    data[header] = 0xFF
    fields[b"events"] = bytes(data)
    with pytest.raises(ValueError):
        unpack(fields)
