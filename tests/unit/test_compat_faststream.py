"""Contract of `infra.compat.faststream`: what `infra.consumer.GroupReader` relies on in FastStream
beyond its documented API. A FastStream upgrade that changes any of it fails here, saying which
seam broke; the behaviour that needs a Redis is in tests/integration/test_seam_faststream.py.
"""

from __future__ import annotations

import asyncio
import typing
from typing import Any

import pytest
from faststream import AckPolicy, StreamMessage
from faststream.redis import RedisBroker, StreamSub, TestRedisBroker
from faststream.redis.message import BatchStreamMessage

from infra.compat.faststream import RawBatch, entries, raw_entries, raw_message, stopped


def broke(seam: str, change: str) -> str:
    return (
        f"FastStream changed {change}: the seam `{seam}` in infra/compat/faststream.py "
        "(used by infra/consumer.py GroupReader) must be redone for this version"
    )


def production_broker() -> RedisBroker:
    """A broker configured as `gateways.roles` configures it."""
    return RedisBroker(logger=None, apply_types=False)  # type: ignore[arg-type]


def raw_subscriber(broker: RedisBroker) -> Any:
    """A subscriber built the way `GroupReader` builds its reader."""
    return broker.subscriber(
        stream=StreamSub("s", group="g", consumer="c", batch=True, max_records=10),
        ack_policy=AckPolicy.MANUAL,
        parser=raw_entries,
        decoder=raw_message,
    )


def test_the_raw_batch_has_entry_ids_and_fields() -> None:
    keys = typing.get_type_hints(BatchStreamMessage)
    assert {"message_ids", "data"} <= set(keys), broke(
        "entries", "the keys of faststream.redis.message.BatchStreamMessage"
    )
    assert keys["message_ids"] == list[bytes], broke("entries", "BatchStreamMessage.message_ids")
    assert keys["data"] == list[dict[bytes, bytes]], broke("entries", "BatchStreamMessage.data")


def test_a_batch_stream_subscriber_hands_its_parser_what_redis_read() -> None:
    """The batch a subscriber builds from an XREADGROUP reply (its `_get_msgs`, FastStream's
    own read loop) holds the ids and fields as Redis returned them, in order."""
    sub = raw_subscriber(production_broker())
    handed: list[RawBatch] = []

    async def consume_one(msg: RawBatch) -> None:
        handed.append(msg)

    async def read(_: str) -> Any:
        return ((b"s", ((b"1-0", {b"k": b"\xff\x00"}), (b"2-0", {b"a": b"b", b"c": b""}))),)

    sub.consume_one = consume_one
    try:
        asyncio.run(sub._get_msgs(read))
    except (AttributeError, TypeError) as exc:
        pytest.fail(broke("entries", f"the batch stream subscriber's read loop ({exc!r})"))
    assert len(handed) == 1, broke("entries", "one batch per read")
    assert entries(handed[0]) == (
        [b"1-0", b"2-0"],
        [{b"k": b"\xff\x00"}, {b"a": b"b", b"c": b""}],
    ), broke("entries", "the batch a stream subscriber hands its parser")


def test_the_public_stream_message_carries_the_raw_batch_and_acks_nothing() -> None:
    raw = {"message_ids": [b"1-0"], "data": [{b"k": b"v"}]}

    async def main() -> tuple[StreamMessage[RawBatch], RawBatch]:
        message = await raw_entries(raw)
        await message.ack()  # FastStream's base message: no Redis call
        return message, await raw_message(message)

    message, decoded = asyncio.run(main())
    assert decoded is raw, broke("raw_entries", "faststream.StreamMessage(raw_message=, body=)")
    assert message.body == b"", broke("raw_entries", "faststream.StreamMessage.body")


def test_a_subscriber_says_whether_it_runs() -> None:
    broker = production_broker()
    sub = raw_subscriber(broker)

    @sub
    async def handle(raw: Any) -> None:
        return None

    assert hasattr(sub, "running"), broke("stopped", "the subscriber's `running` attribute")
    assert stopped(sub), broke("stopped", "`running` of a subscriber not started")

    async def main() -> tuple[bool, bool]:
        async with TestRedisBroker(broker):
            started = stopped(sub)
            await sub.stop()
            return started, stopped(sub)

    started, after_stop = asyncio.run(main())
    assert not started, broke("stopped", "`running` of a started subscriber")
    assert after_stop, broke("stopped", "`running` after `stop()`")
