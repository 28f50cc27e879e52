"""Tamper evidence end to end on the real PostgreSQL: the `audit` role chains and checkpoints the
log, then events are altered, deleted, inserted and swapped directly in `linkflow_events`, and
`linkflow audit verify` names the right position and kind each time, and passes again once the
log is restored; checkpoints signed by another key fail; exports verify offline, and fail once
edited by one byte or checked with another key."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from api import Api
from psycopg.types.json import Jsonb
from stack import eventually, roles

from domain.audit_signing import SigningKey, b64, checkpoint_message
from gateways import audit_cli
from infra.settings import Settings

KEY = SigningKey.generate()
WORKFLOW = {
    "name": "audited",
    "nodes": [{"id": "t", "type": "transform", "config": {"set": {"x": 1}}}],
    "edges": [],
}


def audit_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"audit_signing_key": b64(KEY.private_bytes()), "audit_checkpoint_s": 0.2}
    )


def sql(settings: Settings, query: str, params: Any = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(settings.conninfo, autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


async def all_chained_and_signed(settings: Settings) -> bool:
    def probe() -> bool:
        (head, chained, unsigned), *_ = sql(
            settings,
            "SELECT (SELECT max(notification_id) FROM linkflow_events),"
            " (SELECT max(position) FROM audit_chain),"
            " (SELECT count(*) FROM (SELECT workspace_id, max(position) p FROM audit_chain"
            "  GROUP BY workspace_id) h WHERE NOT EXISTS (SELECT 1 FROM audit_checkpoints k"
            "  WHERE k.workspace_id = h.workspace_id AND k.position = h.p))",
        )
        return head == chained and unsigned == 0

    return await asyncio.to_thread(probe)


@dataclass(frozen=True)
class Audited:
    settings: Settings
    ws: str


@pytest.fixture
async def case(api: Api, fresh_settings: Settings) -> AsyncIterator[Audited]:
    """A log of two workspaces (workflows, a credential) with a gap of unused positions in the
    middle (as a rolled-back append leaves), chained and checkpointed by the audit role, which
    is stopped again (so nothing chains what a test inserts)."""
    settings = audit_settings(fresh_settings)
    other = Api(api.base, api.session)
    await other.sign_up()
    await api.create_workflow(WORKFLOW)
    await other.create_workflow(WORKFLOW)
    sql(
        settings,
        "SELECT setval('linkflow_events_notification_id_seq',"
        " (SELECT max(notification_id) FROM linkflow_events) + 5)",
    )
    await api.create_workflow(WORKFLOW)
    reply = await api.call(
        "POST",
        api.ws("/credentials"),
        json={"name": "shop", "type": "api_token", "data": {"token": "s3cret-value"}},
    )
    assert reply.status == 201, reply.body
    await other.create_workflow(WORKFLOW)
    await api.create_workflow(WORKFLOW)
    async with roles(settings, "relay", "audit"):
        await eventually(lambda: all_chained_and_signed(settings), timeout=30)
    assert api.workspace is not None
    yield Audited(settings, api.workspace)


async def verify(settings: Settings, **kwargs: Any) -> audit_cli.VerifyReport:
    return await asyncio.to_thread(audit_cli.verify, settings, **kwargs)


def workspace_positions(settings: Settings, ws: str) -> list[int]:
    return [
        p
        for (p,) in sql(
            settings, "SELECT position FROM audit_chain WHERE workspace_id = %s ORDER BY 1", (ws,)
        )
    ]


async def test_an_untouched_log_verifies_with_its_checkpoints(case: Audited) -> None:
    audited = case.settings
    report = await verify(audited)
    assert report.finding is None, report.text()
    assert report.events == report.matched > 10 and report.checkpoints >= 2


async def test_an_altered_event_is_named_and_the_restored_log_passes(case: Audited) -> None:
    audited, ws = case.settings, case.ws
    target = workspace_positions(audited, ws)[2]
    ((original,),) = sql(
        audited, "SELECT state FROM linkflow_events WHERE notification_id = %s", (target,)
    )
    sql(
        audited,
        "UPDATE linkflow_events SET state = state || ' '::bytea WHERE notification_id = %s",
        (target,),
    )
    report = await verify(audited)
    assert report.finding is not None
    assert (report.finding.position, report.finding.kind) == (target, "altered")
    sql(
        audited,
        "UPDATE linkflow_events SET state = %s WHERE notification_id = %s",
        (original, target),
    )
    assert (await verify(audited)).finding is None


async def test_a_deleted_event_is_named_removed_and_the_restored_log_passes(
    case: Audited,
) -> None:
    audited, ws = case.settings, case.ws
    target = workspace_positions(audited, ws)[3]
    saved = sql(audited, "SELECT * FROM linkflow_events WHERE notification_id = %s", (target,))
    sql(audited, "DELETE FROM linkflow_events WHERE notification_id = %s", (target,))
    report = await verify(audited)
    assert report.finding is not None
    assert (report.finding.position, report.finding.kind) == (target, "removed")
    columns = ", ".join(["%s"] * len(saved[0]))
    row = [Jsonb(v) if isinstance(v, dict) else v for v in saved[0]]  # the actor column
    sql(audited, f"INSERT INTO linkflow_events VALUES ({columns})", row)
    assert (await verify(audited)).finding is None


async def test_an_inserted_event_is_named_and_the_log_passes_once_it_is_gone(
    case: Audited,
) -> None:
    audited = case.settings
    positions = {p for (p,) in sql(audited, "SELECT notification_id FROM linkflow_events")}
    gap = next(p for p in range(1, max(positions)) if p not in positions)
    sql(
        audited,
        "INSERT INTO linkflow_events (originator_id, originator_version, topic, state,"
        " notification_id) SELECT originator_id, originator_version + 1000, topic, state, %s"
        " FROM linkflow_events WHERE notification_id = %s",
        (gap, gap - 1),
    )
    report = await verify(audited)
    assert report.finding is not None
    assert (report.finding.position, report.finding.kind) == (gap, "inserted")
    sql(audited, "DELETE FROM linkflow_events WHERE notification_id = %s", (gap,))
    assert (await verify(audited)).finding is None


def swap(settings: Settings, a: int, b: int) -> None:
    """Exchange two events' positions (the unique index is checked row by row: three steps)."""
    for old, new in ((a, -a), (b, a), (-a, b)):
        sql(
            settings,
            "UPDATE linkflow_events SET notification_id = %s WHERE notification_id = %s",
            (new, old),
        )


async def test_two_swapped_events_are_named_reordered_and_pass_once_swapped_back(
    case: Audited,
) -> None:
    audited, ws = case.settings, case.ws
    positions = workspace_positions(audited, ws)
    a, b = positions[1], positions[4]
    swap(audited, a, b)
    report = await verify(audited)
    assert report.finding is not None
    assert (report.finding.position, report.finding.kind) == (a, "reordered")
    assert f"position {b}" in report.finding.detail
    swap(audited, a, b)
    assert (await verify(audited)).finding is None


async def test_a_rewritten_chain_is_caught_by_the_signed_checkpoint(case: Audited) -> None:
    audited, ws = case.settings, case.ws
    target = workspace_positions(audited, ws)[0]
    sql(
        audited,
        "UPDATE linkflow_events SET state = state || ' '::bytea WHERE notification_id = %s",
        (target,),
    )
    # Whoever edits the log rewrites the recorded chain to match (without the signing key).
    sql(audited, "DELETE FROM audit_chain")
    sql(audited, "UPDATE consumer_positions SET position = 0 WHERE consumer LIKE 'audit%%'")
    async with roles(audited, "relay", "audit"):
        await eventually(lambda: all_chained_and_signed(audited), timeout=30)
    report = await verify(audited, workspace=ws)
    assert report.finding is not None and report.finding.kind == "checkpoint"
    assert report.finding.position >= target


async def test_a_checkpoint_signed_by_another_key_fails(case: Audited) -> None:
    audited, ws = case.settings, case.ws
    position = workspace_positions(audited, ws)[1]
    ((chain_hash,),) = sql(audited, "SELECT hash FROM audit_chain WHERE position = %s", (position,))
    ((signed_at,),) = sql(audited, "SELECT now()")
    forger = SigningKey.generate()
    signature = forger.sign(checkpoint_message(ws, position, bytes(chain_hash), signed_at))
    sql(
        audited,
        "INSERT INTO audit_checkpoints VALUES (%s, %s, %s, %s, %s, %s)",
        (ws, position, chain_hash, signed_at, KEY.key_id, signature),
    )
    report = await verify(audited)
    assert report.finding is not None
    assert (report.finding.position, report.finding.kind) == (position, "signature")
    sql(
        audited,
        "DELETE FROM audit_checkpoints WHERE workspace_id = %s AND position = %s",
        (ws, position),
    )
    assert (await verify(audited)).finding is None
    # Trusting only another key: every checkpoint fails.
    trusting_other = await verify(audited, trusted=[forger.public_key])
    assert trusting_other.finding is not None and trusting_other.finding.kind == "signature"


def _export(settings: Settings, ws: str, after: int = 0) -> bytes:
    out = io.StringIO()
    audit_cli.export(settings, ws, after, None, out)
    return out.getvalue().encode()


def _check(data: bytes, key: bytes) -> str:
    return audit_cli.verify_export(io.BytesIO(data), key)


async def test_an_export_verifies_offline_and_leaves_credential_data_out(
    case: Audited,
) -> None:
    audited, ws = case.settings, case.ws
    data = await asyncio.to_thread(_export, audited, ws)
    assert b"s3cret" not in data and b'sealed_data":' not in data.replace(b"\\", b"")
    lines = [json.loads(line) for line in data.splitlines()]
    events, tail = lines[:-1], lines[-1]
    assert all(e["specversion"] == "1.0" and e["subject"] and e["hash"] for e in events)
    assert tail["manifest"]["events"] == len(events) and tail["manifest"]["checkpoints"]
    redacted = [e for e in events if "redacted" in e]
    assert redacted and all("statesha256" in e for e in redacted)
    assert "OK" in _check(data, KEY.public_key)
    # From a position on: the chain continues from the recorded hash before it.
    later = await asyncio.to_thread(_export, audited, ws, events[2]["position"])
    assert "OK" in _check(later, KEY.public_key)


async def test_an_export_edited_by_one_byte_fails_naming_the_line(case: Audited) -> None:
    audited, ws = case.settings, case.ws
    data = await asyncio.to_thread(_export, audited, ws)
    lines = data.splitlines(keepends=True)
    n = next(i for i, line in enumerate(lines) if b'"redacted"' not in line and i > 0)
    at = lines[n].index(b"workspace_id")
    lines[n] = lines[n][:at] + b"W" + lines[n][at + 1 :]  # one byte of the event's data
    with pytest.raises(audit_cli.ExportError) as failure:
        _check(b"".join(lines), KEY.public_key)
    assert failure.value.line == n + 1


async def test_an_export_checked_with_another_key_fails(case: Audited) -> None:
    audited, ws = case.settings, case.ws
    data = await asyncio.to_thread(_export, audited, ws)
    with pytest.raises(audit_cli.ExportError) as failure:
        _check(data, SigningKey.generate().public_key)
    assert "not signed by the given public key" in str(failure.value)


def _linkflow(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **settings.process_env(), "LINKFLOW_LOG_LEVEL": "WARNING"}
    binary = Path(sys.executable).with_name("linkflow")
    return subprocess.run(
        [str(binary), *args], env=env, capture_output=True, text=True, timeout=120
    )


async def test_the_cli_exits_0_when_intact_and_1_naming_the_position_when_not(
    case: Audited, tmp_path: Path
) -> None:
    audited, ws = case.settings, case.ws
    ok = await asyncio.to_thread(_linkflow, audited, "audit", "verify")
    assert ok.returncode == 0 and ok.stdout.startswith("OK"), ok.stdout + ok.stderr
    target = workspace_positions(audited, ws)[2]
    sql(
        audited,
        "UPDATE linkflow_events SET state = state || ' '::bytea WHERE notification_id = %s",
        (target,),
    )
    bad = await asyncio.to_thread(_linkflow, audited, "audit", "verify", "--workspace", ws)
    assert bad.returncode == 1 and f"position {target} (altered" in bad.stdout, bad.stdout
    sql(
        audited,
        "UPDATE linkflow_events SET state = substring(state from 1 for"
        " length(state) - 1) WHERE notification_id = %s",
        (target,),
    )
    out = tmp_path / "export.jsonl"
    key = tmp_path / "key.pub"
    key.write_text(b64(KEY.public_key))
    exported = await asyncio.to_thread(
        _linkflow, audited, "audit", "export", "--workspace", ws, "-o", str(out)
    )
    assert exported.returncode == 0, exported.stderr
    checked = await asyncio.to_thread(
        _linkflow, audited, "audit", "verify-export", str(out), "--public-key", str(key)
    )
    assert checked.returncode == 0 and checked.stdout.startswith("OK"), checked.stdout
    out.write_bytes(out.read_bytes().replace(b'"aggregateversion":1', b'"aggregateversion":2', 1))
    broken = await asyncio.to_thread(
        _linkflow, audited, "audit", "verify-export", str(out), "--public-key", str(key)
    )
    assert broken.returncode == 1 and "line 1" in broken.stdout, broken.stdout
