"""Dependency wiring in one place: builds the event store, command bus, PostgreSQL pool and Redis
client that a process's roles share. Imported by `gateways.roles`, the CLI and the tests.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from commands.bus import CommandBus
from commands.limits import limits_from
from engine.dispatch import Dispatcher
from infra.compat.eventsourcing import postgres_pool
from infra.crypto import SecretBox
from infra.db import DictPool, bound_sync_pool, open_pool
from infra.eventstore import EventStore
from infra.settings import Settings
from infra.streams import redis_client


@dataclass
class Container:
    settings: Settings
    store: EventStore
    bus: CommandBus
    pool: DictPool
    redis: Redis
    box: SecretBox

    async def close(self) -> None:
        await self.pool.close()
        await self.redis.aclose()
        self.bus.close()
        self.store.close()


async def bootstrap(settings: Settings) -> Container:
    store = EventStore(settings)
    # The event store's pool: the bounds its settings cannot express (infra.db).
    bound_sync_pool(postgres_pool(store), settings)
    redis = redis_client(settings)
    # Tasks a command schedules go to the workers as soon as it is durable (engine.dispatch).
    dispatcher = Dispatcher(redis, settings)
    return Container(
        settings=settings,
        store=store,
        bus=CommandBus(
            store,
            threads=settings.command_threads,
            after_save=dispatcher.after_save,
            limits=limits_from(settings),
        ),
        pool=await open_pool(settings, max_size=settings.pg_pool_size),
        redis=redis,
        box=SecretBox(settings.secret_key),
    )
