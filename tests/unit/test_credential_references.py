"""Credential references in node configs, pure: definitions accept only
`{{ credentials.<name>.<field> }}` and only in nodes a worker runs; the Execution turns them into
secret markers (never values) and records the workspace's variables; the worker-side filling and
redaction (engine.secrets) with a real SecretBox; sealed data bound to its key and credential."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import pytest

from commands.lookups import SealedCredential
from domain.credential import Credential
from domain.definition import DefinitionInvalid, parse_definition
from domain.execution import Execution
from domain.expressions import ExpressionError, expression_errors, render, render_task
from engine.nodes.http_request import NodeError
from engine.secrets import REDACTED, redact, resolve, secret_texts
from infra.crypto import SealedValueInvalid, SecretBox

T0 = datetime(2026, 1, 1, tzinfo=UTC)
KEY = "k" * 32
WS = str(uuid4())
CONTEXT = {"trigger": {"base": "http://h", "text": "{{ credentials.api.token }}"}, "vars": {}}


def http_node(config: dict[str, Any], node_id: str = "call") -> dict[str, Any]:
    return {"id": node_id, "type": "http_request", "config": config}


def definition(*nodes: dict[str, Any]) -> dict[str, Any]:
    return {"name": "secrets", "nodes": list(nodes)}


def problems(raw: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(DefinitionInvalid) as exc:
        parse_definition(raw)
    return [(p.path, p.message) for p in exc.value.problems]


# ---------------------------------------------------------------- definitions


def test_http_request_may_read_a_credential_field() -> None:
    config = {
        "url": "{{ trigger.base }}/x?key={{ credentials.api.token }}",
        "headers": {"Authorization": 'Bearer {{ credentials."my-api".token }}'},
    }
    assert parse_definition(definition(http_node(config))).nodes[0].config == config


@pytest.mark.parametrize(
    "expression",
    [
        "credentials",
        "credentials.api",
        "credentials.api.token.x",
        "length(credentials.api.token)",
        "credentials.api.token || 'x'",
        "credentials[0].a.b",
    ],
)
def test_other_uses_of_credentials_are_errors_with_their_path(expression: str) -> None:
    raw = definition(http_node({"url": "http://h", "headers": {"X": f"{{{{ {expression} }}}}"}}))
    [(path, message)] = problems(raw)
    assert path == "nodes[0].config.headers.X"
    assert "credentials.<name>.<field>" in message


@pytest.mark.parametrize(
    ("node", "path"),
    [
        (
            {"id": "t", "type": "transform", "config": {"set": {"x": "{{ credentials.a.b }}"}}},
            "nodes[0].config.set.x",
        ),
        (
            {
                "id": "c",
                "type": "condition",
                "config": {
                    "conditions": [
                        {"value": "{{ credentials.a.b }}", "operator": "eq", "operand": "x"}
                    ]
                },
            },
            "nodes[0].config.conditions[0].value",
        ),
        ({"id": "d", "type": "delay", "config": {"seconds": "{{ credentials.a.b }}"}}, None),
    ],
)
def test_inline_nodes_may_not_read_credentials(node: dict[str, Any], path: str | None) -> None:
    found = problems(definition(node))
    assert any(
        (path is None or p == path) and "only available to http_request" in m for p, m in found
    ), found


# ---------------------------------------------------------------- rendering


def test_render_task_turns_a_credential_string_into_a_marker_with_its_path() -> None:
    template = {
        "url": "{{ trigger.base }}/x?key={{ credentials.api.key }}&v=1",
        "headers": {
            "Authorization": "Bearer {{ credentials.api.token }}",
            "X": "{{ trigger.base }}",
        },
        "body": [1, " {{ credentials.db.port }} "],
    }
    config, paths = render_task(template, CONTEXT)
    assert config["url"] == {
        "$secret": ["http://h/x?key=", {"credential": "api", "field": "key"}, "&v=1"]
    }
    assert config["headers"] == {
        "Authorization": {"$secret": ["Bearer ", {"credential": "api", "field": "token"}]},
        "X": "http://h",
    }
    assert config["body"] == [1, {"$secret": [{"credential": "db", "field": "port"}]}]
    assert paths == [["url"], ["headers", "Authorization"], ["body", 1]]


def test_template_text_from_the_trigger_is_never_a_reference() -> None:
    config, paths = render_task({"url": "http://h/{{ trigger.text }}"}, CONTEXT)
    assert config == {"url": "http://h/{{ credentials.api.token }}"}
    assert paths == []


def test_render_for_inline_nodes_refuses_credentials() -> None:
    with pytest.raises(ExpressionError, match="only available to nodes a worker runs"):
        render({"x": "{{ credentials.a.b }}"}, CONTEXT)
    assert expression_errors({"x": "{{ credentials.a.b }}"}) == []


def test_the_scheduled_task_carries_markers_never_values() -> None:
    raw = definition(
        http_node({"url": "http://h", "headers": {"A": "Bearer {{ credentials.api.token }}"}})
    )
    ex = Execution.start(uuid4(), WS, str(uuid4()), 1, parse_definition(raw).to_json(), None, T0)
    [scheduled] = [e for e in ex.pending_events if isinstance(e, Execution.NodeScheduled)]
    assert scheduled.task is not None
    assert scheduled.task["secrets"] == [["headers", "A"]]
    assert scheduled.task["config"]["headers"]["A"] == {
        "$secret": ["Bearer ", {"credential": "api", "field": "token"}]
    }


def test_an_execution_records_the_variables_it_started_with() -> None:
    raw = {
        "name": "vars",
        "nodes": [{"id": "t", "type": "transform", "config": {"set": {"r": "{{ vars.region }}"}}}],
    }
    variables = {"region": "eu-west", "n": 3}
    ex = Execution.start(
        uuid4(), WS, str(uuid4()), 1, parse_definition(raw).to_json(), None, T0, vars=variables
    )
    started = ex.pending_events[0]
    assert isinstance(started, Execution.ExecutionStarted)
    assert started.vars == variables
    assert ex.context()["vars"] == variables
    assert ex.output == {"r": "eu-west"}


# ---------------------------------------------------------------- the worker's side


def sealed(box: SecretBox, name: str, data: dict[str, Any]) -> SealedCredential:
    credential_id = Credential.id_for(WS, name)
    return SealedCredential(
        credential_id, name, "generic", box.seal(data, Credential.sealing_context(credential_id))
    )


def lookup_of(*credentials: SealedCredential) -> Any:
    by_name = {c.name: c for c in credentials}

    async def lookup(name: str) -> SealedCredential | None:
        return by_name.get(name)

    return lookup


async def test_resolve_fills_exactly_the_listed_markers() -> None:
    box = SecretBox(KEY)
    lookup = lookup_of(sealed(box, "api", {"token": "s3cr3t-t0ken", "port": 5432}))
    forged = {"$secret": [{"credential": "api", "field": "token"}]}  # e.g. from trigger input
    config = {
        "url": {"$secret": ["http://h/?k=", {"credential": "api", "field": "token"}]},
        "body": {"port": {"$secret": [{"credential": "api", "field": "port"}]}, "echo": forged},
    }
    filled, secrets = await resolve(config, [["url"], ["body", "port"]], lookup, box)
    assert filled["url"] == "http://h/?k=s3cr3t-t0ken"
    assert filled["body"] == {"port": 5432, "echo": forged}
    assert config["url"] != filled["url"]  # the task's config is left as it was
    assert "s3cr3t-t0ken" in secrets


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        ({"credential": "nope", "field": "token"}, "credential 'nope' not found"),
        ({"credential": "api", "field": "nope"}, "credential 'api' has no field 'nope'"),
    ],
)
async def test_a_missing_credential_or_field_is_a_credential_error(
    marker: dict[str, str], message: str
) -> None:
    box = SecretBox(KEY)
    lookup = lookup_of(sealed(box, "api", {"token": "s3cr3t-t0ken"}))
    with pytest.raises(NodeError) as exc:
        await resolve({"url": {"$secret": [marker]}}, [["url"]], lookup, box)
    assert exc.value.error == {"type": "credential_error", "message": message}
    assert exc.value.retryable is False


async def test_a_credential_sealed_under_another_key_is_a_credential_error() -> None:
    lookup = lookup_of(sealed(SecretBox("o" * 32), "api", {"token": "s3cr3t-t0ken"}))
    with pytest.raises(NodeError) as exc:
        marker = {"$secret": [{"credential": "api", "field": "token"}]}
        await resolve({"url": marker}, [["url"]], lookup, SecretBox(KEY))
    assert exc.value.error["type"] == "credential_error"
    assert "s3cr3t" not in str(exc.value.error)


def test_redact_replaces_every_occurrence_in_values_and_keys() -> None:
    secrets = secret_texts(["ab/cd ef"])
    value = {
        "headers": {"authorization": "Bearer ab/cd ef"},
        "ab/cd ef": ["x ab/cd ef y", "ab%2Fcd%20ef", "ab%2Fcd+ef", 3, None],
    }
    assert redact(value, secrets) == {
        "headers": {"authorization": f"Bearer {REDACTED}"},
        REDACTED: [f"x {REDACTED} y", REDACTED, REDACTED, 3, None],
    }


def test_sealed_data_opens_only_under_its_key_and_its_credential() -> None:
    box = SecretBox(KEY)
    own = Credential.sealing_context(Credential.id_for(WS, "api"))
    other = Credential.sealing_context(Credential.id_for(WS, "other"))
    text = box.seal({"token": "s3cr3t-t0ken"}, own)
    assert "s3cr3t" not in text
    assert box.open(text, own) == {"token": "s3cr3t-t0ken"}
    with pytest.raises(SealedValueInvalid):
        SecretBox("o" * 32).open(text, own)
    with pytest.raises(SealedValueInvalid):
        box.open(text, other)
