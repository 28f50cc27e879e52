"""The `audit` consumer: it chains every event once, catches up after a Redis flush, a
redelivered batch leaves the chain as it was, and of two audit processes one is active."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import psycopg
import pytest
from api import Api
from stack import eventually, roles

from domain.audit_signing import SigningKey, b64
from engine.audit_chain import AuditChain
from gateways import audit_cli
from gateways.roles import _broker
from infra.eventlog import pack, read_log
from infra.settings import Settings
from infra.streams import events_stream

KEY = SigningKey.generate()
WORKFLOW = {
    "name": "chained",
    "nodes": [{"id": "t", "type": "transform", "config": {"set": {"x": 1}}}],
    "edges": [],
}


def _settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"audit_signing_key": b64(KEY.private_bytes()), "audit_checkpoint_s": 0.2}
    )


def _rows(settings: Settings, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(settings.conninfo) as conn:
        return conn.execute(query).fetchall()


async def _chained(settings: Settings) -> bool:
    def probe() -> bool:
        ((head, chained, rows),) = _rows(
            settings,
            "SELECT (SELECT max(notification_id) FROM linkflow_events),"
            " (SELECT max(position) FROM audit_chain), (SELECT count(*) FROM audit_chain)",
        )
        (events,) = _rows(settings, "SELECT count(*) FROM linkflow_events")[0]
        return head == chained and rows == events

    return await asyncio.to_thread(probe)


async def test_the_chain_catches_up_after_a_redis_flush(api: Api, fresh_settings: Settings) -> None:
    settings = _settings(fresh_settings)
    async with roles(settings, "relay", "audit") as r:
        await api.create_workflow(WORKFLOW)
        await eventually(lambda: _chained(settings), timeout=30)
        await r.container.redis.flushall()
        await api.create_workflow(WORKFLOW)
        await api.create_workflow(WORKFLOW)
        await eventually(lambda: _chained(settings), timeout=30)
    report = await asyncio.to_thread(audit_cli.verify, settings)
    assert report.finding is None and report.unchained == 0, report.text()


async def test_a_redelivered_batch_does_not_change_the_chain(
    api: Api, fresh_settings: Settings
) -> None:
    settings = _settings(fresh_settings)
    await api.create_workflow(WORKFLOW)
    async with roles(settings) as r:
        c = r.container
        consumer = AuditChain(
            KEY, c.store, c.pool, c.redis, _broker(settings), events_stream(settings)
        )
        await consumer.prepare()
        assert await consumer.catch_up() > 0
        before = _rows(settings, "SELECT position, workspace_id, hash FROM audit_chain ORDER BY 1")
        async with c.pool.connection() as conn:
            events = await read_log(conn, 0, 1000)
            await conn.commit()
        fields = {k.encode(): v for k, v in pack(events).items()}
        await consumer.on_entries([b"1-0"], [fields])  # the whole log again
        # Past the base class's position check too: the workspace heads refuse it.
        consumer.position = 0
        consumer.heads.clear()
        await consumer.on_entries([b"1-0"], [fields])
        after = _rows(settings, "SELECT position, workspace_id, hash FROM audit_chain ORDER BY 1")
        assert after == before and len(before) == len(events)


async def test_of_two_audit_processes_one_is_active(
    api: Api, fresh_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="infra.leader")
    settings = _settings(fresh_settings)
    async with roles(settings, "relay", "audit"):
        await eventually(lambda: _chained(settings), timeout=30)
        async with roles(settings, "audit"):

            async def refused() -> bool:
                return any(
                    r.getMessage() == "standby" and r.fields["name"] == "audit"  # type: ignore[attr-defined]
                    for r in caplog.records
                )

            await eventually(refused, timeout=10)
            await api.create_workflow(WORKFLOW)
            await eventually(lambda: _chained(settings), timeout=30)
    report = await asyncio.to_thread(audit_cli.verify, settings)
    assert report.finding is None, report.text()
