"""How group commit picks a batch (`GroupCommit._take`, no I/O): requests that would decide on
what another request of the same batch writes wait for the next batch."""

from __future__ import annotations

from uuid import uuid4

from infra.group_commit import GroupCommit, _Request


def request(writes: set, reads: dict | None = None) -> _Request:  # type: ignore[type-arg]
    return _Request([object()], frozenset(writes), reads or {})


def test_a_batch_holds_no_reader_of_what_it_writes_nor_writer_of_what_it_reads() -> None:
    a, b, c = uuid4(), uuid4(), uuid4()
    commit = GroupCommit(lambda events, reads: [])
    writes_a = request({a})
    reads_a = request({b}, {a: 1})  # would check a against the state before writes_a
    writes_c_reads_b = request({c}, {b: 0})
    writes_b = request({b})  # would change what writes_c_reads_b read
    reads_c = request({uuid4()}, {c: 0})  # c is written by writes_c_reads_b
    commit._queue = [writes_a, reads_a, writes_c_reads_b, writes_b, reads_c]
    batch = commit._take()
    assert batch == [writes_a, writes_c_reads_b]
    assert commit._queue == [reads_a, writes_b, reads_c]
    assert commit._take() == [reads_a, reads_c]
    assert commit._take() == [writes_b]
