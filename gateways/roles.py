"""The runnable roles (gateway, relay, projector, matching, timers, worker, callbacks, all) and
how each starts, serves `/metrics` + `/health` + `/ready`, and stops on SIGTERM without losing
work.

Event consumers (projector, matching, timers, callbacks and error workflows, audit) and the relay
are single-active per role: each holds a PostgreSQL advisory lock (see infra.leader); extra
processes wait as standbys. Workers and gateways scale out freely.

Outages: a role that stops because PostgreSQL or Redis is away, or because it lost its lock
with its PostgreSQL session, is started again every second by `_supervised` until it runs; the
loops inside a role skip a failed pass and try again. Either way the outage is logged once
(`dependency_down` / `dependency_up`, infra.outages), not as a traceback per pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web
from faststream.redis import RedisBroker

from engine.audit_chain import AuditChain
from engine.callbacks import Callbacks
from engine.error_workflows import ErrorWorkflows
from engine.matching import Matching
from engine.schedules import Clock, Scheduler, Schedules, utc_now
from engine.timers import Timers
from engine.worker import Worker
from gateways.bootstrap import Container, bootstrap
from gateways.http.app import make_app
from gateways.http.context import respond
from gateways.http.errors import error_response
from gateways.http.ops import add_ops_routes
from infra.audit_keys import load_signing_key
from infra.consumer import EventConsumer
from infra.leader import LeadershipLost, hold_leadership
from infra.logging import get_logger, log_event
from infra.loop_lag import watch_loop
from infra.memory import freeze_startup_objects, trim_loop
from infra.outages import OUTAGES, POSTGRES, REDIS, install_log_filter
from infra.relay import Relay
from infra.settings import DEV_JWT_SECRET, Settings
from infra.streams import Epoch, events_stream
from projections.visibility import VisibilityProjector, reset_read_models

log = get_logger(__name__)

ROLES = ("gateway", "relay", "projector", "matching", "timers", "worker", "callbacks", "audit")
METRICS_PORTS = {
    "relay": 9101,
    "projector": 9102,
    "matching": 9103,
    "timers": 9104,
    "worker": 9105,
    "callbacks": 9106,
    "audit": 9107,
}

RoleRunner = Callable[[Container, asyncio.Event], Awaitable[None]]
# A role stopped by a crash or an outage starts again after this pause.
RESTART_S = 1.0


def _broker(settings: Settings) -> RedisBroker:
    # logger=None is FastStream's documented way to silence it; its kwargs stub omits None.
    # apply_types=False: handlers take the decoded message as it is. With FastDepends on, every
    # batch resolved the handler's message parameter in a worker thread (a thread hop per
    # batch, ~9 % of an idle consumer's CPU); nothing here uses its injection.
    return RedisBroker(settings.redis_url, logger=None, apply_types=False)  # type: ignore[arg-type]


async def run_relay(c: Container, stop: asyncio.Event) -> None:
    await Relay(c.settings, c.redis).run(stop)


async def _run_event_consumer(
    c: Container,
    stop: asyncio.Event,
    build: Callable[[RedisBroker], EventConsumer],
    extra: Callable[[EventConsumer, asyncio.Event], list[Awaitable[None]]] | None = None,
) -> None:
    broker = _broker(c.settings)
    consumer = build(broker)
    async with hold_leadership(c.settings, consumer.name, stop) as leadership:
        if leadership:  # its work is cancelled if the lock goes (LeadershipLost)
            await leadership.run(_consume(consumer, broker, stop, extra))


async def _consume(
    consumer: EventConsumer,
    broker: RedisBroker,
    stop: asyncio.Event,
    extra: Callable[[EventConsumer, asyncio.Event], list[Awaitable[None]]] | None,
) -> None:
    await consumer.prepare()
    # Connected (not yet consuming) before catching up: catching up may publish (matching
    # tells workers about attempts canceled meanwhile).
    await broker.connect()
    try:
        await consumer.catch_up()
        await broker.start()
        log_event(log, "consumer_started", consumer=consumer.name, position=consumer.position)
        loops = [consumer.watch(stop)] + (extra(consumer, stop) if extra else [])
        async with asyncio.TaskGroup() as group:  # one failing stops the others
            for loop in loops:
                group.create_task(loop)  # type: ignore[arg-type]
    finally:
        await broker.stop()


async def run_projector(c: Container, stop: asyncio.Event) -> None:
    await _run_event_consumer(
        c,
        stop,
        lambda broker: VisibilityProjector(
            c.store, c.pool, c.redis, broker, events_stream(c.settings)
        ),
    )


async def run_matching(c: Container, stop: asyncio.Event) -> None:
    def build(broker: RedisBroker) -> EventConsumer:
        return Matching(c.settings, c.store, c.pool, c.redis, broker, events_stream(c.settings))

    async def watch_redis(consumer: EventConsumer, stop: asyncio.Event) -> None:
        """Republish tasks Redis lost: all of them after a flush, else the missing ones."""
        assert isinstance(consumer, Matching)
        epoch = Epoch(c.redis, c.settings)
        await epoch.changed()
        await consumer.republish_lost(older_than_s=0)
        last_sweep = time.monotonic()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.5)
            # Redis (or PostgreSQL) away: said once (infra.outages), tried again next pass.
            with OUTAGES.guard("redis watch failed", REDIS, logger=log):
                if await epoch.changed():
                    log_event(log, "redis_data_lost")
                    consumer.dispatcher.queues_ready.clear()
                    await consumer.republish_lost(older_than_s=0)
                elif time.monotonic() - last_sweep >= c.settings.lost_task_after_s / 3:
                    last_sweep = time.monotonic()
                    await consumer.republish_lost(c.settings.lost_task_after_s)

    def extra(consumer: EventConsumer, stop: asyncio.Event) -> list[Awaitable[None]]:
        assert isinstance(consumer, Matching)
        return [watch_redis(consumer, stop), consumer.feed_loop(stop)]

    await _run_event_consumer(c, stop, build, extra)


async def run_timers(c: Container, stop: asyncio.Event) -> None:
    def build(broker: RedisBroker) -> EventConsumer:
        return Timers(c.bus, c.store, c.pool, c.redis, broker, events_stream(c.settings))

    def extra(consumer: EventConsumer, stop: asyncio.Event) -> list[Awaitable[None]]:
        assert isinstance(consumer, Timers)
        return [consumer.fire_loop(stop)]

    async with asyncio.TaskGroup() as group:  # one failing cancels the other (then restarted)
        group.create_task(_run_event_consumer(c, stop, build, extra))
        group.create_task(run_schedules(c, stop))


async def run_schedules(
    c: Container, stop: asyncio.Event, clock: Clock = utc_now, poll_s: float = 1.0
) -> None:
    """The timers role's cron schedules: the `schedules` consumer (single active) keeps
    `engine_schedules`; the scheduler runs in every timers process (rows are claimed with SKIP
    LOCKED and each due time has its own idempotency key)."""

    def build(broker: RedisBroker) -> EventConsumer:
        return Schedules(c.store, c.pool, c.redis, broker, events_stream(c.settings))

    async with asyncio.TaskGroup() as group:
        group.create_task(_run_event_consumer(c, stop, build))
        group.create_task(Scheduler(c.pool, c.bus, clock, poll_s).run(stop))


async def run_callbacks(c: Container, stop: asyncio.Event) -> None:
    def build(broker: RedisBroker) -> EventConsumer:
        return Callbacks(
            c.settings, c.bus, c.box, c.store, c.pool, c.redis, broker, events_stream(c.settings)
        )

    def extra(consumer: EventConsumer, stop: asyncio.Event) -> list[Awaitable[None]]:
        assert isinstance(consumer, Callbacks)
        return [consumer.deliver_loop(stop)]

    def build_error_workflows(broker: RedisBroker) -> EventConsumer:
        return ErrorWorkflows(c.bus, c.store, c.pool, c.redis, broker, events_stream(c.settings))

    # The callbacks role also starts error workflows (engine.error_workflows): both react to
    # closed executions; one failing cancels the other (then restarted).
    async with asyncio.TaskGroup() as group:
        group.create_task(_run_event_consumer(c, stop, build, extra))
        group.create_task(_run_event_consumer(c, stop, build_error_workflows))


async def run_audit(c: Container, stop: asyncio.Event) -> None:
    """The audit chain and its signed checkpoints (engine.audit_chain)."""
    key = await asyncio.to_thread(load_signing_key, c.settings)

    def build(broker: RedisBroker) -> EventConsumer:
        return AuditChain(key, c.store, c.pool, c.redis, broker, events_stream(c.settings))

    def extra(consumer: EventConsumer, stop: asyncio.Event) -> list[Awaitable[None]]:
        assert isinstance(consumer, AuditChain)
        return [consumer.checkpoint_loop(stop, c.settings.audit_checkpoint_s)]

    await _run_event_consumer(c, stop, build, extra)


async def run_worker(c: Container, stop: asyncio.Event) -> None:
    broker = _broker(c.settings)
    worker = Worker(c.settings, c.bus, c.redis, broker, c.box, c.pool)
    await worker.prepare()
    await broker.start()
    log_event(log, "worker_started", queues=c.settings.queues)

    async def revive_loop() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.5)
            # Redis away: said once (infra.outages), tried again next pass.
            with OUTAGES.guard("worker revive failed", logger=log):
                await worker.revive()

    try:
        await asyncio.gather(worker.heartbeat(stop), revive_loop())
    finally:
        await broker.stop()
        await worker.drain()


async def run_gateway(
    c: Container, stop: asyncio.Event, roles: Sequence[str] = ("gateway",)
) -> None:
    app = make_app(c, roles)
    await _serve(app, c.settings.http_host, c.settings.http_port, stop)


async def _serve(app: web.Application, host: str, port: int, stop: asyncio.Event) -> None:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    log_event(log, "http_listening", host=host, port=port)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


RUNNERS: dict[str, RoleRunner] = {
    "gateway": run_gateway,
    "relay": run_relay,
    "projector": run_projector,
    "matching": run_matching,
    "timers": run_timers,
    "worker": run_worker,
    "callbacks": run_callbacks,
    "audit": run_audit,
}


async def rebuild_read_models(settings: Settings, wait_s: float = 5.0) -> int | None:
    """Drop the visibility read models and replay the whole event log into them. Takes the
    projector's leadership, so it refuses (None) while a projector runs; returns the events."""
    container = await bootstrap(settings)
    give_up = asyncio.Event()
    asyncio.get_running_loop().call_later(wait_s, give_up.set)
    try:
        async with hold_leadership(settings, "projector", give_up) as leading:
            if not leading:
                return None
            projector = VisibilityProjector(
                container.store,
                container.pool,
                container.redis,
                _broker(settings),
                events_stream(settings),
            )
            async with container.pool.connection() as conn:
                await reset_read_models(conn)
                await conn.commit()
            await projector.prepare()
            return await projector.catch_up()
    finally:
        await container.close()


async def run(role: str, settings: Settings) -> None:
    """Run one role (or `all`) until SIGINT/SIGTERM."""
    roles = list(ROLES) if role == "all" else [role]
    # A traceback of an outage (PostgreSQL or Redis away) logged anywhere in this process is
    # counted by infra.outages instead of written (one line per outage).
    install_log_filter()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if settings.jwt_secret == DEV_JWT_SECRET and "gateway" in roles:
        log_event(
            log,
            "dev_jwt_secret_in_use",
            level=logging.WARNING,
            hint="set LINKFLOW_JWT_SECRET before sharing this deployment",
        )
    container = await _bootstrap_when_reachable(settings, roles, stop)
    if container is None:
        return  # stopped before PostgreSQL answered
    freeze_startup_objects()  # shorter collector pauses (infra.memory)
    runners = RUNNERS | {"gateway": functools.partial(run_gateway, roles=roles)}
    tasks = [
        asyncio.create_task(_supervised(name, runners[name], container, stop)) for name in roles
    ]
    tasks.append(asyncio.create_task(trim_loop(stop)))  # RSS back down after a burst
    tasks.append(asyncio.create_task(watch_loop(stop)))  # linkflow_event_loop_lag_seconds
    if "gateway" not in roles:
        ops = web.Application()
        add_ops_routes(ops, container, roles)
        port = settings.metrics_port or METRICS_PORTS[roles[0]]
        tasks.append(asyncio.create_task(_serve(ops, settings.http_host, port, stop)))
    await stop.wait()
    log_event(log, "stopping", roles=roles)
    await asyncio.gather(*tasks, return_exceptions=True)
    await container.close()
    log_event(log, "stopped", roles=roles)


async def _bootstrap_when_reachable(
    settings: Settings, roles: Sequence[str], stop: asyncio.Event
) -> Container | None:
    """`bootstrap`, again every RESTART_S while PostgreSQL is away (the event store needs it to
    start), serving meanwhile on the process's port: `/health` 200, anything else 503
    `unavailable` with Retry-After, so clients see the outage, not a refused connection.
    None if stopped first."""
    try:
        return await bootstrap(settings)
    except Exception as exc:
        if OUTAGES.report(exc, where="start") is None:
            raise
    port = (
        settings.http_port
        if "gateway" in roles
        else (settings.metrics_port or METRICS_PORTS[roles[0]])
    )
    standing_in = asyncio.Event()
    stand_in = asyncio.create_task(_serve(_starting_app(), settings.http_host, port, standing_in))
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=RESTART_S)
            if stop.is_set():
                return None
            try:
                container = await bootstrap(settings)
            except Exception as exc:
                if OUTAGES.report(exc, where="start") is None:
                    raise
                continue
            OUTAGES.ok(POSTGRES)
            return container
        return None
    finally:
        standing_in.set()
        await stand_in


def _starting_app() -> web.Application:
    """What a process answers while it waits for PostgreSQL to start."""

    async def answer(request: web.Request) -> web.Response:
        if request.path == "/health":
            return respond({"status": "starting", "waiting_for": [POSTGRES]})
        return error_response(
            503,
            "unavailable",
            "starting: waiting for PostgreSQL",
            headers={"Retry-After": "2"},
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    return app


async def _supervised(
    name: str, runner: RoleRunner, container: Container, stop: asyncio.Event
) -> None:
    """Run a role; if it crashes, log and restart it after a pause (until stopped). A role
    stopped by an outage of PostgreSQL or Redis, or by losing its lock, is not logged as a
    crash: the outage is said once (infra.outages; `leadership_lost` by infra.leader), and the
    role restarts every RESTART_S until the dependency answers again."""
    while not stop.is_set():
        try:
            await runner(container, stop)
            return
        except Exception as exc:
            if OUTAGES.report(exc, where=f"role {name}") is None and not _lost_lock(exc):
                log.exception("role_crashed", extra={"fields": {"role_name": name}})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=RESTART_S)


def _lost_lock(exc: BaseException) -> bool:
    """`exc` is LeadershipLost, or a group of such (TaskGroups of a role's parts)."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_lost_lock(inner) for inner in exc.exceptions)
    return isinstance(exc, LeadershipLost)
