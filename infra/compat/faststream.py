"""Seam onto FastStream (0.7): what `infra.consumer.GroupReader` relies on beyond FastStream's
documented API, in one place. Contract tests: tests/unit/test_compat_faststream.py (pure) and
tests/integration/test_seam_faststream.py (against a Redis).

- The raw batch. A stream subscriber with `batch=True` hands its parser one dict per read:
  `message_ids` (the entry ids) and `data` (the entries' fields, as Redis returned them), the
  shape of `faststream.redis.message.BatchStreamMessage` (a TypedDict, not documented).
  `raw_entries` (a custom parser, documented) wraps it as it is in the public `StreamMessage`,
  so FastStream's own parser, which JSON-decodes every entry and encodes the batch again, is
  skipped (and cannot fail on odd bytes); `raw_message` (a custom decoder) hands the dict to
  the handler; `entries` reads it. It used to be wrapped in a hand-built
  `RedisBatchStreamMessage` bound to the private `FAKE_CONSUMER`: the public `StreamMessage`
  does the same job and is cheaper (3.1 against 4.4 µs a batch). Nothing acknowledges through
  the message: the subscribers use `AckPolicy.MANUAL` and `GroupReader` sends XACK itself.
- Stopped subscribers. A stream subscriber whose group vanished (Redis flushed: NOGROUP) stops
  for good (it logs at CRITICAL; it would also exit a FastStream app, which LinkFlow does not
  run). `stopped` reads the subscriber's `running` attribute (public name, not documented);
  `start()` (documented for dynamic subscribers) starts it again once the group is back.

Imported only by `infra.consumer`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeAlias

from faststream import StreamMessage

# What a batch stream subscriber hands its parser (see the module's docstring).
RawBatch: TypeAlias = Mapping[str, Any]


async def raw_entries(message: RawBatch) -> StreamMessage[RawBatch]:
    """FastStream parser that leaves the batch as Redis returned it (no JSON decoding)."""
    return StreamMessage(raw_message=message, body=b"")


async def raw_message(message: StreamMessage[RawBatch]) -> RawBatch:
    """FastStream decoder that hands the handler the batch itself."""
    return message.raw_message


def entries(raw: RawBatch) -> tuple[list[bytes], list[dict[bytes, bytes]]]:
    """The batch's entry ids and, in the same order, their fields."""
    return list(raw["message_ids"]), list(raw["data"])


def stopped(subscriber: Any) -> bool:
    """Whether FastStream stopped the subscriber (or it was never started)."""
    return not subscriber.running
