"""A PostgreSQL outage under the running stack (one process per role, two gateways, a standby
relay and a standby projector), made with a TCP proxy between every process and PostgreSQL.

While PostgreSQL is away, requests answer 503 `unavailable` with Retry-After within the request
deadline, `/ready` is 503 and `/health` 200 on every process, and no process writes a traceback
per second. When it returns, the first requests succeed (no stale pooled connection answers
500), every process is ready again within seconds, every execution reaches its terminal state
exactly once, and each single-active role has exactly one leader, the one holding its lock.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

import aiohttp
import psycopg
import pytest
from api import Api, signed_up
from e2e.test_faults import finish_and_compare, start_batch
from examples import load_example
from faultproxy import FaultProxy
from processes import Process, free_port, stack_env, wait_http_ok
from stack import eventually
from target import serve_target

from infra.settings import Settings

pytestmark = pytest.mark.fault

OUTAGE_S = 8.5
REDIS_OUTAGE_S = 6.0
ROUNDS_AT = (0.0, 2.5)  # seconds into the outage: each round ends before it does
REQUEST_LIMIT_S = 6.0  # the deadline (5 s) and a margin for a loaded 2-core machine
READY_AGAIN_S = 10.0
CLIENT_WAIT_S = 20.0  # how long the test waits for any answer (the defect: ~60 s)
TRACEBACKS_PER_PROCESS = 2
# name in the stack -> role it runs
PROCESSES = {
    "gateway-1": "gateway",
    "gateway-2": "gateway",
    "relay-1": "relay",
    "relay-2": "relay",
    "projector-1": "projector",
    "projector-2": "projector",
    "matching": "matching",
    "timers": "timers",
    "worker": "worker",
}
# A Redis outage: one process per role.
REDIS_PROCESSES = {
    role: role for role in ("gateway", "relay", "projector", "matching", "timers", "worker")
}
SINGLE_ACTIVE = ("relay", "projector", "matching", "timers", "schedules")
LEADER_LINE = re.compile(r'^linkflow_leader\{name="([a-z]+)"\} ([0-9.]+)$', re.M)


@dataclass
class Member:
    name: str
    process: Process
    base: str  # where it serves /health, /ready, /metrics (and the API, for a gateway)


class OutageStack:
    """The stack's processes (`processes`: name -> role), each reaching PostgreSQL and Redis
    where `reach` says (the fault proxies' settings); `settings` reach them directly."""

    def __init__(self, settings: Settings, processes: dict[str, str], reach: Settings) -> None:
        self.settings = settings
        self.members: dict[str, Member] = {}
        for name, role in processes.items():
            port = free_port()
            env = stack_env(reach, LINKFLOW_HTTP_PORT=str(port), LINKFLOW_METRICS_PORT=str(port))
            base = f"http://127.0.0.1:{port}"
            self.members[name] = Member(name, Process(role, env, f"{base}/health"), base)

    @property
    def gateways(self) -> list[Member]:
        return [m for m in self.members.values() if m.process.role == "gateway"]

    def start_all(self) -> None:
        for member in self.members.values():
            member.process.start(wait=False)
        for member in self.members.values():
            wait_http_ok(f"{member.base}/health", timeout=60)

    def stop_all(self) -> dict[str, int]:
        return {
            name: m.process.stop() for name, m in self.members.items() if m.process.proc is not None
        }

    def logs(self) -> dict[str, str]:
        return {name: m.process.output() for name, m in self.members.items()}


@asynccontextmanager
async def running(
    settings: Settings, processes: dict[str, str], reach: Settings, proxy: FaultProxy
) -> AsyncIterator[tuple[OutageStack, Api, str]]:
    """The stack started, a signed-up client of its first gateway, the example target."""
    stack = OutageStack(settings, processes, reach)
    try:
        stack.start_all()
        async with serve_target() as target, aiohttp.ClientSession() as session:
            api = Api(stack.gateways[0].base, session)
            await api.sign_up()
            yield stack, api, target
    finally:
        proxy.restore()  # whatever happened, let the processes stop cleanly
        codes = stack.stop_all()
        bad = {name: code for name, code in codes.items() if code != 0}
        assert not bad, {name: stack.members[name].process.output()[-3000:] for name in bad}


@pytest.fixture
def pg_proxy(fresh_settings: Settings) -> Iterator[FaultProxy]:
    with FaultProxy(fresh_settings.pg_host, fresh_settings.pg_port) as proxy:
        yield proxy


@pytest.fixture
def redis_proxy(fresh_settings: Settings) -> Iterator[FaultProxy]:
    url = urlsplit(fresh_settings.redis_url)
    assert url.hostname is not None and url.port is not None
    with FaultProxy(url.hostname, url.port) as proxy:
        yield proxy


@pytest.fixture
async def pg_outage_stack(
    fresh_settings: Settings, pg_proxy: FaultProxy
) -> AsyncIterator[tuple[OutageStack, Api, str]]:
    reach = fresh_settings.model_copy(update={"pg_port": pg_proxy.port})
    async with running(fresh_settings, PROCESSES, reach, pg_proxy) as stack:
        yield stack


@pytest.fixture
async def redis_outage_stack(
    fresh_settings: Settings, redis_proxy: FaultProxy
) -> AsyncIterator[tuple[OutageStack, Api, str]]:
    url = urlsplit(fresh_settings.redis_url)
    proxied = f"redis://{url.hostname}:{redis_proxy.port}{url.path}"
    reach = fresh_settings.model_copy(update={"redis_url": proxied})
    async with running(fresh_settings, REDIS_PROCESSES, reach, redis_proxy) as stack:
        yield stack


async def leaders(session: aiohttp.ClientSession, stack: OutageStack) -> dict[str, list[str]]:
    """Single-active role -> the processes whose metrics say they lead it."""
    found: dict[str, list[str]] = {name: [] for name in SINGLE_ACTIVE}
    for member in stack.members.values():
        async with session.get(f"{member.base}/metrics") as resp:
            text = await resp.text()
        for role, value in LEADER_LINE.findall(text):
            if role in found and float(value) == 1.0:
                found[role].append(member.name)
    return found


def lock_holders(settings: Settings) -> dict[str, list[str]]:
    """Single-active role -> application names of the sessions holding its advisory lock."""
    with psycopg.connect(settings.conninfo, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT n.name, a.application_name FROM unnest(%s::text[]) AS n(name)"
            " JOIN pg_locks l ON l.locktype = 'advisory' AND l.granted AND l.objsubid = 1"
            " AND ((l.classid::bigint << 32) | l.objid::bigint)"
            "     = hashtext('linkflow:' || n.name)::bigint"
            " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " JOIN pg_stat_activity a ON a.pid = l.pid",
            (list(SINGLE_ACTIVE),),
        ).fetchall()
    holders: dict[str, list[str]] = {name: [] for name in SINGLE_ACTIVE}
    for name, application in rows:
        holders[name].append(application)
    return holders


async def each_lock_held(stack: OutageStack) -> bool:
    held = await asyncio.to_thread(lock_holders, stack.settings)
    return all(len(held[role]) == 1 for role in SINGLE_ACTIVE)


async def all_ready(session: aiohttp.ClientSession, stack: OutageStack) -> bool:
    for member in stack.members.values():
        async with session.get(f"{member.base}/ready") as resp:
            if resp.status != 200:
                return False
    return True


async def one_leader_each(session: aiohttp.ClientSession, stack: OutageStack) -> bool:
    """Each single-active role: exactly one process says it leads, and the one session holding
    the role's lock is that process's."""
    led = await leaders(session, stack)
    held = await asyncio.to_thread(lock_holders, stack.settings)
    for role in SINGLE_ACTIVE:
        if len(led[role]) != 1 or len(held[role]) != 1:
            return False
        leader = stack.members[led[role][0]].process.proc
        assert leader is not None
        if not held[role][0].endswith(f":{leader.pid}"):
            return False
    return True


@dataclass
class Timed:
    what: str
    status: int
    body: Any
    headers: Any
    elapsed: float


async def timed(
    session: aiohttp.ClientSession, what: str, method: str, url: str, **kwargs: Any
) -> Timed:
    """One request, timed; one left unanswered for CLIENT_WAIT_S has status 0."""
    started = time.monotonic()
    try:
        async with session.request(
            method, url, timeout=aiohttp.ClientTimeout(total=CLIENT_WAIT_S), **kwargs
        ) as resp:
            raw = await resp.read()
    except TimeoutError:
        return Timed(what, 0, "no answer", {}, time.monotonic() - started)
    try:
        body = json.loads(raw)
    except ValueError:
        body = raw.decode(errors="replace")
    return Timed(what, resp.status, body, resp.headers, time.monotonic() - started)


def api_requests(
    session: aiohttp.ClientSession,
    api: Api,
    gateway: Member,
    workflow_id: str,
    known: str,
    target: str,
) -> list[Any]:
    """A start (with an Idempotency-Key), a read of one execution and a list, on `gateway`."""
    headers = {"Authorization": f"Bearer {api.token}"}
    ws = f"{gateway.base}/api/v1/workspaces/{api.workspace}"
    return [
        timed(
            session,
            f"{gateway.name} POST executions",
            "POST",
            f"{ws}/workflows/{workflow_id}/executions",
            json={"input": {"base_url": target, "order_id": 0}},
            headers={**headers, "Idempotency-Key": uuid.uuid4().hex},
        ),
        timed(
            session,
            f"{gateway.name} GET execution",
            "GET",
            f"{ws}/executions/{known}",
            headers=headers,
        ),
        timed(
            session, f"{gateway.name} GET executions", "GET", f"{ws}/executions", headers=headers
        ),
    ]


def tracebacks(text: str) -> int:
    return sum("Traceback" in line for line in text.splitlines())


def assert_one_outage_line(name: str, text: str, dependency: str) -> None:
    """The process said once that `dependency` went, and once that it came back."""
    down = [r for r in log_events(text, "dependency_down") if r["dependency"] == dependency]
    up = [r for r in log_events(text, "dependency_up") if r["dependency"] == dependency]
    assert len(down) == 1, (name, text[-4000:])
    assert len(up) == 1 and up[0]["down_s"] > 0, (name, text[-4000:])


def log_events(text: str, msg: str) -> list[dict[str, Any]]:
    found = []
    for line in text.splitlines():
        if f'"{msg}"' in line:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("msg") == msg:
                found.append(record)
    return found


@pytest.mark.timeout(300)
async def test_postgres_outage(pg_outage_stack: Any, pg_proxy: FaultProxy) -> None:
    stack, api, target = pg_outage_stack
    proxy = pg_proxy
    session = api.session
    wf = await api.create_workflow(load_example("order-followup.json"))

    await eventually(lambda: each_lock_held(stack), timeout=20)  # standbys wait behind
    ids = await start_batch(api, wf["id"], target, 10)  # some still running when it goes

    # ---- the outage
    before = {name: len(text) for name, text in stack.logs().items()}
    cut_at = time.monotonic()
    proxy.cut()

    async def round_at(offset: float) -> list[Timed]:
        """Every gateway's requests and every process's probes, `offset` s into the outage."""
        await asyncio.sleep(max(0.0, offset - (time.monotonic() - cut_at)))
        requests = [
            request
            for gateway in stack.gateways
            for request in api_requests(session, api, gateway, wf["id"], ids[0], target)
        ]
        probes = [
            timed(session, f"{m.name} {path}", "GET", f"{m.base}{path}")
            for m in stack.members.values()
            for path in ("/ready", "/health")
        ]
        return list(await asyncio.gather(*requests, *probes))

    # At once (pooled connections just died) and later (pools retrying): both inside the outage.
    answers = [a for r in await asyncio.gather(*(round_at(t) for t in ROUNDS_AT)) for a in r]
    await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - cut_at)))  # the outage lasts
    during = {name: text[before[name] :] for name, text in stack.logs().items()}
    proxy.restore()
    restored_at = time.monotonic()

    # ---- (a) while PostgreSQL was away
    for answer in answers:
        assert answer.elapsed <= REQUEST_LIMIT_S, (answer.what, answer.elapsed)
        if answer.what.endswith("/health"):
            assert answer.status == 200, answer
        elif answer.what.endswith("/ready"):
            assert answer.status == 503, answer
            assert answer.body["checks"]["postgres"] == "unreachable", answer
        else:
            assert answer.status == 503, answer
            assert answer.body["error"]["code"] == "unavailable", answer
            assert int(answer.headers["Retry-After"]) >= 1, answer
    api_answers = [a for a in answers if " GET " in a.what or " POST " in a.what]
    assert len(api_answers) == len(ROUNDS_AT) * 3 * len(stack.gateways)

    # ---- (b) when it returns: the first requests on every gateway succeed
    first: list[Timed] = []
    for gateway in stack.gateways:
        first += await asyncio.gather(
            *api_requests(session, api, gateway, wf["id"], ids[0], target)
        )
    for answer in first:
        assert 200 <= answer.status < 300, answer
    new_ids = [a.body["execution_id"] for a in first if a.what.endswith("POST executions")]

    await eventually(lambda: all_ready(session, stack), timeout=READY_AGAIN_S)
    ready_after = time.monotonic() - restored_at
    ids += await start_batch(api, wf["id"], target, 10)

    # ---- (c) one leader per single-active role, the holder of its lock
    await eventually(lambda: one_leader_each(session, stack), timeout=10)
    leaders_after = time.monotonic() - restored_at

    # ---- logs: one line for the outage, not a traceback per second (nor during recovery)
    logs = stack.logs()
    since_cut = {name: text[before[name] :] for name, text in logs.items()}
    for name, text in since_cut.items():
        assert tracebacks(text) <= TRACEBACKS_PER_PROCESS, (name, text[-6000:])
        assert_one_outage_line(name, text, "postgres")
    print(
        "outage measurements:",
        json.dumps(
            {
                "max_request_s": round(max(a.elapsed for a in api_answers), 2),
                "requests": len(api_answers),
                "first_after_s": [round(a.elapsed, 2) for a in first],
                "ready_again_s": round(ready_after, 2),
                "one_leader_each_s": round(leaders_after, 2),
                "tracebacks_in_outage": {name: tracebacks(text) for name, text in during.items()},
                "tracebacks_since_cut": {
                    name: tracebacks(text) for name, text in since_cut.items()
                },
                "dependency_down_lines": {
                    name: len(log_events(text, "dependency_down"))
                    for name, text in since_cut.items()
                },
            }
        ),
    )
    # Every execution (before the outage, the first after it, and a batch after) reaches its
    # terminal state exactly once; the read model equals one rebuilt from the event log.
    await finish_and_compare(cast(Any, stack), api, ids + new_ids)


@pytest.mark.timeout(300)
async def test_redis_outage(redis_outage_stack: Any, redis_proxy: FaultProxy) -> None:
    """Redis away for a few seconds: PostgreSQL is the truth, so starts are still accepted and
    reads answered; `/ready` is 503 and `/health` 200; no traceback per second; when Redis is
    back every process is ready again and every execution (before, during, after) completes
    exactly once."""
    stack, api, target = redis_outage_stack
    session = api.session
    wf = await api.create_workflow(load_example("order-followup.json"))
    await eventually(lambda: each_lock_held(stack), timeout=20)
    ids = await start_batch(api, wf["id"], target, 10)  # some still running when it goes

    before = {name: len(text) for name, text in stack.logs().items()}
    cut_at = time.monotonic()
    redis_proxy.cut()
    [gateway] = stack.gateways
    answers = list(
        await asyncio.gather(
            *api_requests(session, api, gateway, wf["id"], ids[0], target),
            *(
                timed(session, f"{m.name} {path}", "GET", f"{m.base}{path}")
                for m in stack.members.values()
                for path in ("/ready", "/health")
            ),
        )
    )
    more = await asyncio.gather(*api_requests(session, api, gateway, wf["id"], ids[0], target))
    await asyncio.sleep(max(0.0, REDIS_OUTAGE_S - (time.monotonic() - cut_at)))  # it lasts
    redis_proxy.restore()
    restored_at = time.monotonic()

    during_ids = []
    for answer in [*answers, *more]:
        assert answer.elapsed <= REQUEST_LIMIT_S, (answer.what, answer.elapsed)
        if answer.what.endswith("/ready"):
            assert answer.status == 503, answer
            assert answer.body["checks"]["redis"] == "unreachable", answer
            assert answer.body["checks"]["postgres"] == "ok", answer
        elif answer.what.endswith("POST executions"):
            assert answer.status == 202, answer  # recorded; its tasks go out when Redis is back
            during_ids.append(answer.body["execution_id"])
        else:
            assert answer.status == 200, answer  # /health, and reads of the read models

    await eventually(lambda: all_ready(session, stack), timeout=READY_AGAIN_S)
    ready_after = time.monotonic() - restored_at
    ids += await start_batch(api, wf["id"], target, 5)
    await finish_and_compare(cast(Any, stack), api, ids + during_ids)  # (logs stay readable)

    logs = stack.logs()
    since_cut = {name: text[before[name] :] for name, text in logs.items()}
    for name, text in since_cut.items():
        assert tracebacks(text) <= TRACEBACKS_PER_PROCESS, (name, text[-6000:])
        assert_one_outage_line(name, text, "redis")
    print(
        "redis outage measurements:",
        json.dumps(
            {
                "max_request_s": round(max(a.elapsed for a in [*answers, *more]), 2),
                "ready_again_s": round(ready_after, 2),
                "tracebacks_since_cut": {
                    name: tracebacks(text) for name, text in since_cut.items()
                },
            }
        ),
    )


async def test_a_process_started_while_postgres_is_away_answers_and_comes_up_on_its_own(
    fresh_settings: Settings, pg_proxy: FaultProxy
) -> None:
    """A gateway (re)started during an outage exited (the event store needs PostgreSQL to
    start), so its clients met refused connections. Now it answers at once — /health 200, the
    rest 503 `unavailable` with Retry-After — and serves as usual once PostgreSQL is back."""
    pg_proxy.cut()
    port = free_port()
    reach = fresh_settings.model_copy(update={"pg_port": pg_proxy.port})
    gateway = Process(
        "gateway",
        stack_env(reach, LINKFLOW_HTTP_PORT=str(port)),
        f"http://127.0.0.1:{port}/health",
    )
    gateway.start()  # waits for /health to answer 200
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{base}/api/v1/auth/login", json={}) as resp:
                assert resp.status == 503
                assert (await resp.json())["error"]["code"] == "unavailable"
                assert int(resp.headers["Retry-After"]) >= 1
            pg_proxy.restore()

            async def ready() -> bool:
                try:
                    async with session.get(f"{base}/ready") as resp:
                        return resp.status == 200
                except aiohttp.ClientError:
                    return False  # between the stand-in and the gateway

            await eventually(ready, timeout=20)
        async with signed_up(base) as api:
            assert api.workspace
    finally:
        assert gateway.stop(signal.SIGTERM) == 0, gateway.output()[-3000:]
