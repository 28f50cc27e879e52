"""Contract of `infra.compat.faststream` against a real Redis: what `infra.consumer.GroupReader`
relies on in FastStream that only a server shows (the pure part is in
tests/unit/test_compat_faststream.py). A FastStream upgrade that changes it fails here, saying
which seam broke.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from uuid import uuid4

import pytest
from faststream import AckPolicy
from faststream.redis import RedisBroker, StreamSub
from redis.asyncio import Redis
from stack import eventually

from infra.compat.faststream import entries, raw_entries, raw_message, stopped
from infra.settings import Settings
from infra.streams import ensure_group, redis_client


def broke(seam: str, change: str) -> str:
    return (
        f"FastStream changed {change}: the seam `{seam}` in infra/compat/faststream.py "
        "(used by infra/consumer.py GroupReader) must be redone for this version"
    )


class Reader:
    """One raw batch subscriber, built as `GroupReader` builds its reader."""

    def __init__(self, settings: Settings) -> None:
        self.stream = settings.key(f"compat:{uuid4().hex[:8]}")
        self.redis: Redis = redis_client(settings)
        self.broker = RedisBroker(settings.redis_url, logger=None, apply_types=False)  # type: ignore[arg-type]
        self.batches: list[tuple[list[bytes], list[dict[bytes, bytes]]]] = []
        self.sub = self.broker.subscriber(
            stream=StreamSub(
                self.stream,
                group="g",
                consumer="c",
                batch=True,
                max_records=10,
                polling_interval=50,
            ),
            ack_policy=AckPolicy.MANUAL,
            parser=raw_entries,
            decoder=raw_message,
        )

        async def on_message(raw: Any) -> None:
            self.batches.append(entries(raw))

        self.sub(on_message)

    def read(self) -> list[tuple[bytes, dict[bytes, bytes]]]:
        return [e for ids, fields in self.batches for e in zip(ids, fields, strict=True)]

    async def has_read(self, count: int) -> bool:
        return len(self.read()) >= count

    async def stopped(self) -> bool:
        return stopped(self.sub)


@pytest.fixture
async def reader(settings: Settings) -> AsyncIterator[Reader]:
    r = Reader(settings)
    await ensure_group(r.redis, r.stream, "g")
    await r.broker.start()
    try:
        yield r
    finally:
        await r.broker.stop()
        await r.redis.delete(r.stream)
        await r.redis.aclose()


async def test_the_handler_gets_each_entrys_id_and_fields_as_redis_has_them(reader: Reader) -> None:
    sent = [
        {b"pack": b"\xff\x00 not json"},
        {b"a": b"1", b"b": b""},
        {b"__data__": b"{}"},  # FastStream's own field name, left alone too
    ]
    ids = [await reader.redis.xadd(reader.stream, fields) for fields in sent]
    await eventually(lambda: reader.has_read(len(sent)), timeout=5)
    assert reader.read() == list(zip(ids, sent, strict=True)), broke(
        "raw_entries/raw_message/entries", "the batch its custom parser and decoder get"
    )
    pending = await reader.redis.xpending(reader.stream, "g")
    assert pending["pending"] == len(sent), broke(
        "raw_entries", "AckPolicy.MANUAL: FastStream acknowledged entries itself"
    )


async def test_a_subscriber_whose_group_vanished_stops_and_starts_again(reader: Reader) -> None:
    assert not stopped(reader.sub), broke("stopped", "`running` of a started subscriber")
    await reader.redis.delete(reader.stream)  # its group goes with it: NOGROUP on the next read
    await eventually(reader.stopped, timeout=5)
    await ensure_group(reader.redis, reader.stream, "g")
    await reader.sub.start()
    assert not stopped(reader.sub), broke("stopped", "`start()` of a stopped subscriber")
    entry = await reader.redis.xadd(reader.stream, {b"k": b"v"})
    await eventually(lambda: reader.has_read(1), timeout=5)
    assert reader.read() == [(entry, {b"k": b"v"})], broke(
        "stopped", "reading after `start()` of a subscriber it had stopped"
    )
