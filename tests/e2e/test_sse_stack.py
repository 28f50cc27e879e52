"""The SSE routes against the stack as `make run` starts it (`linkflow run all`), as a browser's
EventSource uses them (the token as `?access_token=`): an execution's events and the live feed
end to end, the token in no log line and no metric; and a gateway stopped with SIGTERM while
streams are open ends them cleanly and exits at once."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import aiohttp
from api import Api
from processes import Process, free_port, stack_env
from sse_client import open_stream

from infra.settings import Settings


def delayed(name: str, seconds: float) -> dict[str, Any]:
    return {
        "name": name,
        "nodes": [
            {"id": "wait", "type": "delay", "config": {"seconds": seconds}},
            {"id": "done", "type": "transform", "config": {"set": {"x": "{{ trigger.x }}"}}},
        ],
        "edges": [{"source": "wait", "target": "done"}],
    }


def url(api: Api, rest: str, base: str | None = None) -> str:
    return f"{base or api.base}/api/v1/{api.ws(rest)}"


async def test_a_browser_streams_with_access_token_which_no_log_or_metric_shows(
    stack: tuple[str, Process], api: Api
) -> None:
    base, proc = stack
    token = api.token
    assert token is not None
    wf = await api.create_workflow(delayed("e2e-live", 1.0))
    live_url = url(api, "/executions/live")
    async with open_stream(
        api.session, live_url, access_token=token, q="workflow_name = 'e2e-live'"
    ) as live:
        assert live.response.status == 200
        await live.opened()
        started = await api.start(wf["id"], {"x": 1})
        execution_id = started["execution_id"]
        events_url = url(api, f"/executions/{execution_id}/events")
        async with open_stream(api.session, events_url, access_token=token) as stream:
            events = await stream.events()
        changes = await live.events(2)
    history = await api.call("GET", api.ws(f"/executions/{execution_id}/history"))
    assert [{k: v for k, v in e.data.items() if k != "position"} for e in events] == history.body
    assert events[-1].event == "ExecutionCompleted"
    assert [(c.data["id"], c.data["status"]) for c in changes] == [
        (execution_id, "running"),
        (execution_id, "completed"),
    ]
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/metrics") as reply:
            metrics = await reply.text()
    assert "linkflow_sse_messages_total" in metrics
    assert token not in metrics
    assert token not in proc.output()


async def test_sigterm_ends_open_streams_and_the_gateway_exits_at_once(
    e2e_settings: Settings, stack: tuple[str, Process], api: Api
) -> None:
    port = free_port()
    env = stack_env(e2e_settings, LINKFLOW_HTTP_PORT=str(port))
    gateway = Process("gateway", env, f"http://127.0.0.1:{port}/ready")
    gateway.start()
    try:
        other = f"http://127.0.0.1:{port}"
        wf = await api.create_workflow(delayed("e2e-long", 60))
        started = await api.start(wf["id"], {"x": 1})
        path = f"/executions/{started['execution_id']}/events"
        async with (
            open_stream(api.session, url(api, path, other), token=api.token) as stream,
            open_stream(api.session, url(api, "/executions/live", other), token=api.token) as live,
        ):
            [first] = await stream.events(1)
            await live.opened()
            began = time.monotonic()
            code = await asyncio.to_thread(gateway.stop)
            took = time.monotonic() - began
            # Both responses end properly (the last chunk), with nothing after the close.
            rest = await stream.events(timeout=5)
            assert await live.events(timeout=5) == []
        assert code == 0, gateway.output()[-3000:]
        assert took < 10, took
        assert first.event == "ExecutionStarted"
        assert not {e.event for e in rest} & {"ExecutionCompleted", "ExecutionCanceled"}
    finally:
        if gateway.proc is not None:
            gateway.stop(signal.SIGKILL)
