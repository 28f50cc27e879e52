"""Redis Streams layout and plumbing shared by the relay and every consumer.

Keys (all under LINKFLOW_REDIS_PREFIX): `events` (the relayed event log), `tasks:<queue>` (node
tasks for workers), `control` (pub/sub: matching tells workers to stop canceled attempts), `epoch`
(a random value; its disappearance tells that Redis lost its data). Consumer groups are created
at id 0 with MKSTREAM, never at `$`, so no published entry is skipped.
"""

from __future__ import annotations

import uuid

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from infra.settings import Settings

WORKER_GROUP = "workers"


def redis_client(settings: Settings) -> Redis:
    return Redis.from_url(settings.redis_url, decode_responses=False)


def events_stream(settings: Settings) -> str:
    return settings.key("events")


def task_stream(settings: Settings, queue: str) -> str:
    return settings.key(f"tasks:{queue}")


def control_channel(settings: Settings) -> str:
    """Pub/sub channel on which matching tells workers to stop canceled attempts."""
    return settings.key("control")


async def ensure_group(redis: Redis, stream: str, group: str) -> None:
    try:
        await redis.xgroup_create(stream, group, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


class Epoch:
    """Detects that Redis lost its data (flush, restart without persistence)."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.key = settings.key("epoch")
        self.known: bytes | str | None = None  # bytes at runtime; the stubs say bytes | str

    async def changed(self) -> bool:
        """True once after the epoch key vanished or changed since the last call."""
        current = await self.redis.get(self.key)
        if current is None:
            await self.redis.set(self.key, uuid.uuid4().hex.encode(), nx=True)
            current = await self.redis.get(self.key)
        changed = self.known is not None and current != self.known
        self.known = current
        return changed
