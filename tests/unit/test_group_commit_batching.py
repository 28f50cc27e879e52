"""How group commit picks a batch (`GroupCommit._take`, no I/O): requests that would decide on
what another request of the same batch writes wait for the next batch."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from uuid import uuid4

from infra.group_commit import GroupCommit, _Request


def request(writes: set, reads: dict | None = None) -> _Request:  # type: ignore[type-arg]
    return _Request([object()], frozenset(writes), reads or {})


def test_a_batch_holds_no_reader_of_what_it_writes_nor_writer_of_what_it_reads() -> None:
    a, b, c = uuid4(), uuid4(), uuid4()
    commit = GroupCommit(lambda events, reads, origins: [])
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


async def test_an_event_loop_request_handed_the_lead_leads_while_every_thread_waits() -> None:
    """The lead passes to a loop caller's request while command threads wait in `save`: the
    group commit's own leader thread takes it on (a pool thread might never come free)."""
    entered, gate = threading.Event(), threading.Event()
    batches: list[int] = []

    def put(events: list, reads: dict, origins: list) -> list[int]:  # type: ignore[type-arg]
        if not batches:
            entered.set()
            gate.wait(timeout=10)  # the first leader holds the lead until the others queue
        batches.append(len(events))
        return list(range(len(events)))

    def one() -> list[SimpleNamespace]:
        return [SimpleNamespace(originator_id=uuid4())]

    async def queued(n: int) -> None:
        for _ in range(5000):  # a deadline of ~5 s
            if len(commit._queue) == n:
                return
            await asyncio.sleep(0.001)
        raise AssertionError(f"{len(commit._queue)} queued, not {n}")

    commit = GroupCommit(put)
    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(4)
    first = loop.run_in_executor(pool, commit.save, one())
    assert await loop.run_in_executor(None, entered.wait, 10)
    looped = asyncio.ensure_future(commit.save_async(one(), {}))
    await queued(1)  # next in line for the lead
    waiting = [loop.run_in_executor(pool, commit.save, one()) for _ in range(3)]
    await queued(4)  # every pool thread waits in `save`
    gate.set()
    await asyncio.wait_for(asyncio.gather(first, looped, *waiting), timeout=10)
    assert batches == [1, 4]
    commit.close()
    pool.shutdown()
