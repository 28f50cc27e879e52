"""The SSE routes (issue 14, item 6) over real HTTP, on an in-process gateway with
the real relay, projector, matching, timers and worker roles on the real PostgreSQL and Redis:
an execution's events recorded then live, ending after the close, resumed with `Last-Event-ID`
without duplicate or gap (204 once the close was had); the live feed of status changes with a
`q`, resumed; tenancy; authentication (`?access_token=`) and bad input; heartbeats; a client that
does not read cut off while another keeps receiving; the cap on streams; the hub following the
log only while clients stream, recovering events Redis lost from the event store, and ending
every stream at shutdown. The gateway is served as `linkflow run gateway` serves it."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from api import Api, signed_up
from databases import own_database
from processes import free_port
from prometheus_client import REGISTRY
from sse_client import Comment, SseEvent, SseStream, open_stream
from stack import Roles, eventually, roles

from gateways.bootstrap import bootstrap
from gateways.http.app import make_app
from gateways.http.live import HUB, Hub
from infra.eventlog import pack, read_log
from infra.settings import Settings
from infra.streams import events_stream

CLOSING = {"ExecutionCompleted", "ExecutionFailed", "ExecutionCanceled", "ExecutionTimedOut"}


def delayed(name: str, seconds: float) -> dict[str, Any]:
    """Wait `seconds` on a durable timer, then output `{"x": trigger.x}`."""
    return {
        "name": name,
        "nodes": [
            {"id": "wait", "type": "delay", "config": {"seconds": seconds}},
            {"id": "done", "type": "transform", "config": {"set": {"x": "{{ trigger.x }}"}}},
        ],
        "edges": [{"source": "wait", "target": "done"}],
    }


ECHO = {
    "name": "echo",
    "nodes": [{"id": "t", "type": "transform", "config": {"set": {"x": "{{ trigger.x }}"}}}],
}


@dataclass
class Gateway:
    """A gateway on real HTTP, with a signed-up user (`api`) and its hub."""

    api: Api
    hub: Hub
    runner: web.AppRunner
    settings: Settings

    @property
    def session(self) -> aiohttp.ClientSession:
        return self.api.session

    def url(self, rest: str) -> str:
        return f"{self.api.base}/api/v1/{self.api.ws(rest)}"

    def stream(self, rest: str, **kwargs: Any) -> Any:
        kwargs.setdefault("token", self.api.token)
        return open_stream(self.session, self.url(rest), **kwargs)

    async def history(self, execution_id: str) -> list[dict[str, Any]]:
        reply = await self.api.call("GET", self.api.ws(f"/executions/{execution_id}/history"))
        assert reply.status == 200, reply.body
        return reply.body


@asynccontextmanager
async def gateway(settings: Settings, **overrides: Any) -> AsyncIterator[Gateway]:
    """The gateway application served as `linkflow run gateway` serves it (`gateways.roles`:
    no access log, handlers not cancelled when their client goes — unlike aiohttp's
    TestServer, which cancels them)."""
    tuned = settings.model_copy(update=overrides)
    container = await bootstrap(tuned)
    app = make_app(container)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            api = Api(f"http://127.0.0.1:{port}", session)
            await api.sign_up()
            yield Gateway(api, app[HUB], runner, tuned)
    finally:
        await runner.cleanup()
        await container.close()


@pytest.fixture(scope="module")
def settings(redis_url: str) -> Iterator[Settings]:
    """A database of this module's own: its many executions change no other module's plans."""
    with own_database(redis_url) as own:
        yield own


@pytest.fixture(scope="module")
async def engine(settings: Settings) -> AsyncIterator[Roles]:
    """The roles that run executions and project them, for the whole module."""
    async with roles(settings, "relay", "projector", "matching", "timers", "worker") as r:
        yield r


@pytest.fixture
async def gw(settings: Settings, engine: Roles) -> AsyncIterator[Gateway]:
    async with gateway(settings) as g:
        yield g


def without_position(event: SseEvent) -> dict[str, Any]:
    assert event.data["position"] == int(event.id or 0)
    return {k: v for k, v in event.data.items() if k != "position"}


def cut_total(reason: str) -> float:
    return REGISTRY.get_sample_value("linkflow_sse_cut_total", {"reason": reason}) or 0.0


# ---------------------------------------------------------------- one execution's events


async def test_an_execution_stream_sends_its_events_recorded_then_live_and_ends_after_the_close(
    gw: Gateway,
) -> None:
    wf = await gw.api.create_workflow(delayed("slow", 1.0))
    started = await gw.api.start(wf["id"], {"x": 1})
    async with gw.stream(f"/executions/{started['execution_id']}/events") as s:
        assert s.response.status == 200
        assert s.response.headers["Content-Type"] == "text/event-stream"
        assert s.response.headers["Cache-Control"] == "no-cache"
        assert s.response.headers["X-Accel-Buffering"] == "no"
        [first] = await s.events(1)
        first_at = time.time()
        rest = await s.events()  # until the server ends the response
    events = [first, *rest]
    # Exactly the history, each entry with its position, which is the id.
    assert [without_position(e) for e in events] == await gw.history(started["execution_id"])
    assert [e.event for e in events] == [e.data["type"] for e in events]
    positions = [e.data["position"] for e in events]
    assert positions == sorted(set(positions))
    assert events[0].event == "ExecutionStarted" and events[-1].event == "ExecutionCompleted"
    assert [e.event for e in events].count("ExecutionCompleted") == 1
    # The close was recorded after the stream had sent its first event: it came live.
    closed_at = events[-1].data["recorded_at"]
    assert closed_at > time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(first_at))


async def test_a_stream_resumed_with_last_event_id_has_no_duplicate_and_no_gap(
    gw: Gateway,
) -> None:
    wf = await gw.api.create_workflow(delayed("resumed", 0.5))
    started = await gw.api.start(wf["id"], {"x": 2})
    path = f"/executions/{started['execution_id']}/events"
    async with gw.stream(path) as s:
        first = await s.events(2)
    # Resumed while the execution still runs (its timer waits): the rest, then the close.
    async with gw.stream(path, last_event_id=first[-1].id) as s:
        assert s.response.status == 200
        rest = await s.events()
    events = first + rest
    assert [without_position(e) for e in events] == await gw.history(started["execution_id"])
    assert len({e.id for e in events}) == len(events)
    # Past the close there is nothing more to come: 204 tells EventSource to stop reconnecting.
    async with gw.stream(path, last_event_id=rest[-1].id) as s:
        assert s.response.status == 204
    # Resuming from any earlier event gives exactly the events after it.
    middle = events[len(events) // 2]
    async with gw.stream(path, last_event_id=middle.id) as s:
        tail = await s.events()
    assert [e.id for e in tail] == [e.id for e in events if int(e.id or 0) > int(middle.id or 0)]


async def test_a_closed_execution_streams_its_whole_history_and_ends(gw: Gateway) -> None:
    wf = await gw.api.create_workflow(ECHO)
    started = await gw.api.start(wf["id"], {"x": "done"})
    await gw.api.wait_terminal(started["execution_id"])
    async with gw.stream(f"/executions/{started['execution_id']}/events") as s:
        events = await s.events()
    assert [without_position(e) for e in events] == await gw.history(started["execution_id"])
    assert events[-1].event == "ExecutionCompleted"


# ---------------------------------------------------------------- the live feed


async def test_the_live_feed_sends_matching_status_changes_of_the_workspace_only(
    gw: Gateway,
) -> None:
    wanted = await gw.api.create_workflow(delayed("wanted", 0.5))
    other = await gw.api.create_workflow(delayed("other", 0.3))
    async with signed_up(gw.api.base) as stranger:
        theirs = await stranger.create_workflow(delayed("wanted", 0.3))
        async with gw.stream("/executions/live", q="workflow_name = 'wanted'") as s:
            await s.opened()
            await stranger.start(theirs["id"], {"x": "theirs"})
            await gw.api.start(other["id"], {"x": "other"})
            mine = [(await gw.api.start(wanted["id"], {"x": i}))["execution_id"] for i in (1, 2)]
            events = await s.events(4)
            # A sentinel: had anything else been sent, it would come before this.
            last = await gw.api.start(wanted["id"], {"x": 3})
            [sentinel] = await s.events(1)
    assert {e.event for e in events} == {"execution"}
    assert sorted((e.data["id"], e.data["status"]) for e in events) == sorted(
        (i, status) for i in mine for status in ("running", "completed")
    )
    ids = [int(e.id or 0) for e in events]
    assert ids == sorted(set(ids))
    assert (sentinel.data["id"], sentinel.data["status"]) == (last["execution_id"], "running")
    # Each is the list item as the list endpoint answers it.
    for e in events:
        if e.data["status"] == "completed":
            listed = await gw.api.call("GET", gw.api.ws("/executions"), q="status = 'completed'")
            [item] = [i for i in listed.body["items"] if i["id"] == e.data["id"]]
            assert e.data == item


async def test_a_fast_execution_shows_both_changes_even_when_projected_together(
    gw: Gateway,
) -> None:
    wf = await gw.api.create_workflow(ECHO)  # closes within milliseconds of its start
    async with (
        gw.stream("/executions/live") as every,
        gw.stream("/executions/live", q="status = 'running'") as starts,
    ):
        await every.opened()
        await starts.opened()
        ids = [(await gw.api.start(wf["id"], {"x": i}))["execution_id"] for i in range(5)]
        changes = await every.events(10)
        started = await starts.events(5)
    assert [(e.data["id"], e.data["status"]) for e in changes if e.data["id"] == ids[0]] == [
        (ids[0], "running"),
        (ids[0], "completed"),
    ]
    assert sorted((e.data["id"], e.data["status"]) for e in changes) == sorted(
        (i, status) for i in ids for status in ("running", "completed")
    )
    positions = [int(e.id or 0) for e in changes]
    assert positions == sorted(set(positions))
    # As started: the row without what the close set.
    first = next(e.data for e in changes if e.data["status"] == "running")
    assert (first["closed_at"], first["output"], first["duration_ms"]) == (None, None, None)
    assert {(e.data["id"], e.data["status"]) for e in started} == {(i, "running") for i in ids}


async def test_the_live_feed_resumes_with_each_changed_execution_once_as_it_is_now(
    gw: Gateway,
) -> None:
    wf = await gw.api.create_workflow(delayed("resume-feed", 0.3))
    async with gw.stream("/executions/live") as s:
        await s.opened()
        first = await gw.api.start(wf["id"], {"x": 1})
        [running] = await s.events(1)
    assert (running.data["id"], running.data["status"]) == (first["execution_id"], "running")
    second = await gw.api.start(wf["id"], {"x": 2})
    await gw.api.wait_terminal(first["execution_id"])
    await gw.api.wait_terminal(second["execution_id"])

    async def resumed() -> list[SseEvent] | None:
        # The projector may not have written the closes yet: resume until it has.
        async with gw.stream("/executions/live", last_event_id=running.id) as s:
            got = await s.events(2)
        return got if all(e.data["status"] == "completed" for e in got) else None

    events = await eventually(resumed)
    # Both executions changed after the first event: each once, completed (the second's
    # `running` collapsed into it), in the order of their last change.
    assert [e.data["id"] for e in events] == [first["execution_id"], second["execution_id"]]
    assert int(events[0].id or 0) < int(events[1].id or 0)
    assert int(running.id or 0) < int(events[0].id or 0)
    # Then live: a later start comes next.
    async with gw.stream("/executions/live", last_event_id=events[-1].id) as s:
        await s.opened()
        third = await gw.api.start(wf["id"], {"x": 3})
        [live] = await s.events(1)
    assert (live.data["id"], live.data["status"]) == (third["execution_id"], "running")


async def test_the_projector_records_the_position_of_the_last_status_change(
    gw: Gateway, engine: Roles
) -> None:
    wf = await gw.api.create_workflow(ECHO)
    started = await gw.api.start(wf["id"], {"x": 1})
    execution_id = started["execution_id"]

    async def positions() -> dict[str, int] | None:
        async with engine.container.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT r.status, r.status_position, e.notification_id, e.topic"
                " FROM rm_executions r JOIN linkflow_events e ON e.originator_id = r.id"
                " WHERE r.id = %s ORDER BY e.notification_id",
                (execution_id,),
            )
            rows = await cur.fetchall()
            await conn.commit()
        if not rows or rows[0]["status"] != "completed":
            return None
        by_type = {row["topic"].rpartition(".")[2]: row["notification_id"] for row in rows}
        return by_type | {"status_position": rows[0]["status_position"]}

    found = await eventually(positions)
    assert found["status_position"] == found["ExecutionCompleted"] > found["ExecutionStarted"]


# ---------------------------------------------------------------- tenancy, auth, bad input


async def test_another_workspaces_execution_is_404_before_any_stream(gw: Gateway) -> None:
    async with signed_up(gw.api.base) as stranger:
        wf = await stranger.create_workflow(ECHO)
        theirs = (await stranger.start(wf["id"], {"x": 1}))["execution_id"]
        # Their execution under my workspace, and my token on their workspace.
        reply = await gw.api.call("GET", gw.api.ws(f"/executions/{theirs}/events"))
        assert (reply.status, reply.body["error"]["code"]) == (404, "not_found")
        for path in (f"/executions/{theirs}/events", "/executions/live"):
            url = f"{gw.api.base}/api/v1/workspaces/{stranger.workspace}{path}"
            async with open_stream(gw.session, url, token=gw.api.token) as s:
                assert s.response.status == 404
    for bad in ("not-a-uuid", "00000000-0000-0000-0000-000000000000"):
        reply = await gw.api.call("GET", gw.api.ws(f"/executions/{bad}/events"))
        assert (reply.status, reply.body["error"]["code"]) == (404, "not_found")


async def test_a_viewer_may_stream_and_a_caller_without_a_token_may_not(gw: Gateway) -> None:
    wf = await gw.api.create_workflow(ECHO)
    started = await gw.api.start(wf["id"], {"x": 1})
    async with signed_up(gw.api.base) as viewer:
        me = (await viewer.call("GET", "me")).body["user"]
        added = await gw.api.call(
            "POST", gw.api.ws("/members"), json={"email": me["email"], "role": "viewer"}
        )
        assert added.status == 201, added.body
        path = f"/executions/{started['execution_id']}/events"
        async with gw.stream(path, token=viewer.token) as s:
            assert s.response.status == 200
            assert (await s.events())[-1].event == "ExecutionCompleted"
    for token in (None, "not-a-token"):
        async with gw.stream(path, token=token) as s:
            assert s.response.status == 401
            assert s.response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_the_token_may_come_as_access_token_on_the_sse_routes_only(gw: Gateway) -> None:
    token = gw.api.token
    assert token is not None
    wf = await gw.api.create_workflow(ECHO)
    started = await gw.api.start(wf["id"], {"x": 1})
    path = f"/executions/{started['execution_id']}/events"
    async with gw.stream(path, token=None, access_token=token) as s:
        assert s.response.status == 200
        assert (await s.events())[-1].event == "ExecutionCompleted"
    async with gw.stream("/executions/live", token=None, access_token=token) as s:
        assert s.response.status == 200
        await s.opened()
    async with gw.stream(path, token=None, access_token=token + "x") as s:
        assert s.response.status == 401
        assert (await s.response.json())["error"]["code"] == "invalid_token"
    async with gw.stream(path, token=None, access_token="") as s:
        assert s.response.status == 401
    # Elsewhere the parameter is no credential.
    listed = await gw.session.get(gw.url("/executions"), params={"access_token": token})
    assert listed.status == 401
    # The token names no metric (they are labelled by route, not by URL).
    metrics = await (await gw.session.get(f"{gw.api.base}/metrics")).text()
    assert token not in metrics
    assert 'route="/api/v1/workspaces/{ws}/executions/{id}/events"' in metrics


@pytest.mark.parametrize("value", ["abc", "-1", "1_000", "1.5", " 12 3", "9" * 20])
async def test_a_malformed_last_event_id_is_422_naming_it(gw: Gateway, value: str) -> None:
    wf = await gw.api.create_workflow(ECHO)
    started = await gw.api.start(wf["id"], {"x": 1})
    for path in (f"/executions/{started['execution_id']}/events", "/executions/live"):
        reply = await gw.api.call("GET", gw.api.ws(path), headers={"Last-Event-ID": value})
        assert reply.status == 422, reply.body
        assert reply.body["error"]["details"][0]["path"] == "Last-Event-ID"


async def test_a_last_event_id_past_the_log_and_a_bad_q_are_422(gw: Gateway) -> None:
    wf = await gw.api.create_workflow(ECHO)
    started = await gw.api.start(wf["id"], {"x": 1})
    future = str(started["position"] + 1_000_000)
    for path in (f"/executions/{started['execution_id']}/events", "/executions/live"):
        reply = await gw.api.call("GET", gw.api.ws(path), headers={"Last-Event-ID": future})
        assert reply.status == 422, reply.body
        assert reply.body["error"]["details"] == [
            {"path": "Last-Event-ID", "message": "is past the end of the event log"}
        ]
    reply = await gw.api.call("GET", gw.api.ws("/executions/live"), q="colour = 'red'")
    assert (reply.status, reply.body["error"]["code"]) == (422, "invalid_query")
    assert reply.body["error"]["details"][0]["position"] == 0


# ---------------------------------------------------------------- heartbeats, slow clients, cap


async def test_a_quiet_stream_sends_a_comment_every_heartbeat(
    settings: Settings, engine: Roles
) -> None:
    async with gateway(settings, sse_heartbeat_s=0.2) as g:
        async with g.stream("/executions/live") as s:
            await s.opened()
            times = [time.monotonic()]
            beats = []
            for _ in range(5):
                beats.append(await s.next(timeout=1.0))
                times.append(time.monotonic())
    assert all(isinstance(b, Comment) and b.text == "keep-alive" for b in beats), beats
    gaps = [later - earlier for earlier, later in zip(times, times[1:], strict=False)]
    assert all(0.1 <= gap <= 0.4 for gap in gaps), gaps


def _stalled_client(url: str, token: str) -> socket.socket:
    """A client that asks for a stream and never reads: a tiny receive buffer, no reads."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    host, _, rest = url.removeprefix("http://").partition("/")
    name, _, port = host.partition(":")
    sock.connect((name, int(port)))
    request = (
        f"GET /{rest} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
        "Accept: text/event-stream\r\n\r\n"
    )
    sock.sendall(request.encode())
    return sock


async def _closed_by_server(sock: socket.socket) -> bool:
    """Read what is left: True once the server closed or reset the connection."""
    sock.setblocking(False)
    try:
        while sock.recv(1 << 16):
            pass
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    return True


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"sse_queue": 32, "sse_write_timeout_s": 60.0}, "slow"),
        ({"sse_queue": 10_000, "sse_write_timeout_s": 1.0}, "stalled"),
    ],
)
async def test_a_client_that_does_not_read_is_cut_off_while_another_keeps_receiving(
    settings: Settings, engine: Roles, overrides: dict[str, Any], reason: str
) -> None:
    async with gateway(settings, **overrides) as g:
        wf = await g.api.create_workflow(ECHO)
        before = cut_total(reason)
        assert g.api.token is not None
        sock = _stalled_client(g.url("/executions/live"), g.api.token)
        try:
            await eventually(lambda: _streams(g.hub, 1))
            async with g.stream("/executions/live") as s:
                await s.opened()
                # Each item carries 20 KB of input and, once completed, the same as output:
                # 160 items of 20-40 KB, more than the socket buffers hold plus the queue.
                blob = "x" * 20_000
                starts = [await g.api.start(wf["id"], {"x": blob}) for _ in range(80)]
                ids = [started["execution_id"] for started in starts]
                completed = await _completions(s, len(ids))
                # Not reading the socket before (that would make it a reader).
                await eventually(lambda: _cut(reason, before), timeout=30)
                assert g.hub.streams == 1  # the reader's
                assert await eventually(lambda: _closed_by_server(sock), timeout=10)
        finally:
            sock.close()
        assert cut_total(reason) == before + 1
        assert sorted(completed) == sorted(ids)


async def _cut(reason: str, before: float) -> bool:
    return cut_total(reason) > before


async def _completions(s: SseStream, count: int) -> list[str]:
    """The ids of the next `count` executions the feed shows completed (a `running` may have
    collapsed into its `completed`)."""
    completed: list[str] = []
    while len(completed) < count:
        [event] = await s.events(1, timeout=30)
        if event.data["status"] == "completed":
            completed.append(event.data["id"])
    return completed


async def _streams(hub: Hub, count: int) -> bool:
    return hub.streams == count


def access_checks(outcome: str) -> float:
    return (
        REGISTRY.get_sample_value("linkflow_sse_access_checks_total", {"outcome": outcome}) or 0.0
    )


async def _ended(s: SseStream, timeout: float = 10.0) -> bool:
    """Read past heartbeats until the server ends or aborts the stream (True), within `timeout`
    (else the wait raises)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            item = await s.next(deadline - asyncio.get_running_loop().time())
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError):
            return True
        if item is None:
            return True
        assert isinstance(item, Comment), f"a stream that lost its access still sent {item}"


async def test_a_stream_is_cut_off_once_its_caller_loses_access(
    settings: Settings, engine: Roles
) -> None:
    """A member removed and an API key revoked: their streams end at the next check, while the
    owner's stream, checked as often, keeps receiving; reconnecting is refused."""
    async with gateway(settings, sse_access_check_s=0.2) as g:
        wf = await g.api.create_workflow(ECHO)
        created = await g.api.call(
            "POST", g.api.ws("/api-keys"), json={"name": "feed", "role": "viewer"}
        )
        assert created.status == 201, created.body
        key = created.body
        async with signed_up(g.api.base) as viewer:
            me = (await viewer.call("GET", "me")).body["user"]
            added = await g.api.call(
                "POST", g.api.ws("/members"), json={"email": me["email"], "role": "viewer"}
            )
            assert added.status == 201, added.body
            kept, cut = access_checks("kept"), cut_total("access")
            async with (
                g.stream("/executions/live") as owner,
                g.stream("/executions/live", token=viewer.token) as member,
                g.stream("/executions/live", token=key["key"]) as keyed,
            ):
                for s in (owner, member, keyed):
                    await s.opened()
                # Each stream's access checked twice at least, and kept.
                await eventually(lambda: _at_least(access_checks("kept"), kept + 6))
                first = await g.api.start(wf["id"], {"x": 1})
                for s in (owner, member, keyed):
                    assert await _completions(s, 1) == [first["execution_id"]]

                removed = await g.api.call("DELETE", g.api.ws(f"/members/{me['id']}"))
                assert removed.status == 204, removed.body
                revoked = await g.api.call("DELETE", g.api.ws(f"/api-keys/{key['id']}"))
                assert revoked.status == 204, revoked.body
                assert await _ended(member)
                assert await _ended(keyed)
                assert cut_total("access") == cut + 2
                second = await g.api.start(wf["id"], {"x": 2})
                assert await _completions(owner, 1) == [second["execution_id"]]
            async with g.stream("/executions/live", token=viewer.token) as again:
                assert again.response.status == 404
            async with g.stream("/executions/live", token=key["key"]) as again:
                assert again.response.status == 401


async def _at_least(value: float, wanted: float) -> bool:
    return value >= wanted


async def test_past_the_cap_a_stream_is_503_with_retry_after(
    settings: Settings, engine: Roles
) -> None:
    async with gateway(settings, sse_max_streams=2) as g:
        async with g.stream("/executions/live") as a, g.stream("/executions/live") as b:
            await a.opened()
            await b.opened()
            reply = await g.api.call("GET", g.api.ws("/executions/live"))
            assert (reply.status, reply.body["error"]["code"]) == (503, "too_many_streams")
            assert reply.headers["Retry-After"] == "5"
        await eventually(lambda: _streams(g.hub, 0), timeout=3)  # they left: room again
        async with g.stream("/executions/live") as c:
            await c.opened()


# ---------------------------------------------------------------- the hub


async def test_the_hub_follows_the_log_only_while_someone_streams(gw: Gateway) -> None:
    assert not gw.hub.following
    async with gw.stream("/executions/live") as s:
        await s.opened()
        assert gw.hub.following
    # The client went away: forgotten within a sweep (a second), not at the next heartbeat
    # (15 s), and the hub stops following the log.
    await eventually(lambda: _not_following(gw.hub), timeout=3)


async def _not_following(hub: Hub) -> bool:
    return not hub.following and hub.streams == 0


async def test_shutdown_ends_open_streams_cleanly(settings: Settings, engine: Roles) -> None:
    async with gateway(settings) as g:
        wf = await g.api.create_workflow(delayed("never-mind", 30))
        started = await g.api.start(wf["id"], {"x": 1})
        async with g.stream(f"/executions/{started['execution_id']}/events") as a:
            async with g.stream("/executions/live") as b:
                await b.opened()
                await a.events(1)
                began = time.monotonic()
                await g.runner.cleanup()
                assert await b.next(timeout=5) is None
                assert await _drained(a) is None
                assert time.monotonic() - began < 5


async def _drained(s: SseStream) -> Any:
    item = await s.next(timeout=5)
    while item is not None:
        item = await s.next(timeout=5)
    return item


@pytest.fixture
async def quiet_gw(fresh_settings: Settings) -> AsyncIterator[tuple[Gateway, Roles]]:
    """A gateway on a database of its own where no relay runs: the test publishes entries."""
    async with roles(fresh_settings) as r, gateway(fresh_settings) as g:
        yield g, r


async def test_events_redis_lost_are_read_from_the_event_store(
    quiet_gw: tuple[Gateway, Roles],
) -> None:
    g, r = quiet_gw
    g.hub.block_ms = 60_000  # only an entry can wake the hub: no reading the log when idle
    wf = await g.api.create_workflow(delayed("lost", 60))
    started = await g.api.start(wf["id"], {"x": 1})
    path = f"/executions/{started['execution_id']}/events"
    async with g.stream(path) as s:
        recorded = await s.events(len(await g.history(started["execution_id"])))
        cancel = await g.api.call("POST", g.api.ws(f"/executions/{started['execution_id']}/cancel"))
        assert cancel.status == 202, cancel.body
        async with r.container.pool.connection() as conn:
            log = await read_log(conn, int(recorded[-1].id or 0), 1000)
            await conn.commit()
        assert len(log) >= 2
        # Redis lost every entry but the last: the hub reads the gap from the event store.
        await r.container.redis.xadd(events_stream(g.settings), pack(log[-1:]))  # type: ignore[arg-type]
        live = await s.events()
    events = recorded + live
    assert [without_position(e) for e in events] == await g.history(started["execution_id"])
    assert events[-1].event == "ExecutionCanceled"


async def test_without_the_relay_the_hub_reads_the_log_itself(
    quiet_gw: tuple[Gateway, Roles],
) -> None:
    g, _ = quiet_gw
    wf = await g.api.create_workflow(delayed("no-relay", 60))
    started = await g.api.start(wf["id"], {"x": 1})
    async with g.stream(f"/executions/{started['execution_id']}/events") as s:
        recorded = await s.events(len(await g.history(started["execution_id"])))
        cancel = await g.api.call("POST", g.api.ws(f"/executions/{started['execution_id']}/cancel"))
        assert cancel.status == 202, cancel.body
        live = await s.events(timeout=10)
    assert [without_position(e) for e in recorded + live] == await g.history(
        started["execution_id"]
    )


async def test_the_live_feed_shows_a_queued_execution_waiting_then_running(gw: Gateway) -> None:
    definition = delayed("gated-feed", 0.3) | {"settings": {"concurrency": {"limit": 1}}}
    wf = await gw.api.create_workflow(definition)
    async with gw.stream("/executions/live") as s:
        await s.opened()
        first = await gw.api.start(wf["id"], {"x": 1})
        second = await gw.api.start(wf["id"], {"x": 2})
        assert second["status"] == "queued"
        changes = await s.events(5)
    mine = [e.data["status"] for e in changes if e.data["id"] == second["execution_id"]]
    assert mine == ["queued", "running", "completed"]
    assert [e.data["status"] for e in changes if e.data["id"] == first["execution_id"]] == [
        "running",
        "completed",
    ]
