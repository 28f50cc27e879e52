"""The pure parts of inbound webhooks: the hook shown for a workflow, the token index's id, what
is recorded of a request (headers without secrets, query, body), and each auth mode's check."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
from multidict import CIMultiDict

from domain.definition import WebhookAuth
from domain.webhook import WebhookIndex, hook_of
from domain.workflow import Workflow
from gateways.http.routes_hooks import (
    BodyTooDeep,
    auth_problem,
    basic_credentials,
    parse_body,
    query_values,
    recorded_headers,
    replay_key,
)
from infra.signing import sign

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SECRET = "the-secret"


def test_hook_is_shown_only_for_a_webhook_trigger_with_a_token() -> None:
    assert hook_of("tok", "webhook") == {"token": "tok", "path": "/api/v1/hooks/tok"}
    assert hook_of("tok", "manual") is None
    assert hook_of(None, "webhook") is None


def test_index_id_is_derived_from_the_token() -> None:
    assert WebhookIndex.id_for("a") == WebhookIndex.id_for("a") != WebhookIndex.id_for("b")
    workflow_id = uuid4()
    index = WebhookIndex.create("a", workflow_id, "ws", NOW)
    assert (index.id, index.workflow_id, index.workspace_id) == (
        WebhookIndex.id_for("a"),
        str(workflow_id),
        "ws",
    )


def test_workflow_keeps_its_token() -> None:
    definition = {"name": "w", "nodes": [{"id": "a", "type": "transform"}]}
    workflow = Workflow.create(uuid4(), "ws", definition, "u", NOW, webhook_token="tok")
    created = workflow.collect_events()[0]
    assert workflow.webhook_token == created.webhook_token == "tok"  # type: ignore[attr-defined]


def test_recorded_headers_leave_out_every_secret_header() -> None:
    headers = [
        ("Authorization", "Bearer x"),
        ("Proxy-Authorization", "Basic y"),
        ("Cookie", "a=b"),
        ("X-LinkFlow-Signature", "abc"),
        ("X-LinkFlow-Timestamp", "2026-01-01T00:00:00Z"),
        ("X-Hook-Key", SECRET),
        ("Content-Type", "application/json"),
        ("X-Tag", "one"),
        ("x-tag", "two"),
    ]
    auth = WebhookAuth(type="header", credential="c", name="x-hook-KEY")
    assert recorded_headers(headers, auth) == {
        "content-type": "application/json",
        "x-tag": "one, two",
    }
    assert recorded_headers([("X-Hook-Key", "v")], None) == {"x-hook-key": "v"}


def test_query_values_keep_repeats_as_lists() -> None:
    assert query_values([("a", "1"), ("b", "2"), ("a", "3"), ("a", "4")]) == {
        "a": ["1", "3", "4"],
        "b": "2",
    }


@pytest.mark.parametrize(
    ("raw", "content_type", "expected"),
    [
        (b"", "application/json", None),
        (b'{"a": [1, 2]}', "application/json", {"a": [1, 2]}),
        (b'{"a": 1}', "application/vnd.api+json", {"a": 1}),
        (b'{"a": "\\\\u0000"}', "application/json", {"a": "\\u0000"}),  # no NUL in it
        (b'{"a": 1}', "text/plain", '{"a": 1}'),
        (b"a=1&b=2", "application/x-www-form-urlencoded", "a=1&b=2"),
        (b"\xff\x00ok", "application/octet-stream", "\ufffd\ufffdok"),
    ],
)
def test_parse_body(raw: bytes, content_type: str, expected: object) -> None:
    assert parse_body(raw, content_type) == expected


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a": ',
        b"NaN",
        b'{"a": Infinity}',
        b"[" * 100_000,
        b'{"a": ["x\\u0000"]}',
        b'{"k\\u0000": 1}',
    ],
)
def test_invalid_json_with_a_json_content_type_is_refused(raw: bytes) -> None:
    with pytest.raises(ValueError):
        parse_body(raw, "application/json")


def test_a_json_body_nested_too_deep_names_its_path_under_body() -> None:
    deep = b'{"a": [' + b"[" * 70 + b"]" * 70 + b"]}"
    with pytest.raises(BodyTooDeep) as info:
        parse_body(deep, "application/json")
    assert info.value.path == "body.a" + "[0]" * 63
    assert str(info.value) == "nested deeper than 64 levels"
    with pytest.raises(BodyTooDeep) as info:
        parse_body(b"[[[1]]]", "application/json", max_depth=2)
    assert info.value.path == "body[0][0]"
    with pytest.raises(BodyTooDeep) as info:
        parse_body(b"[" * 100_000 + b"]" * 100_000, "application/json")
    assert info.value.path == "body"
    assert parse_body(b"[[[1]]]", "application/json", max_depth=3) == [[[1]]]
    assert parse_body(b"[" * 70 + b"]" * 70, "text/plain") == "[" * 70 + "]" * 70  # text


def _basic(value: str) -> str:
    return "Basic " + base64.b64encode(value.encode()).decode()


def test_basic_credentials() -> None:
    assert basic_credentials(_basic("ada:pa:ss")) == ("ada", "pa:ss")
    assert basic_credentials("basic " + base64.b64encode(b"a:").decode()) == ("a", "")
    for bad in (None, "", "Basic", "Basic !!!", _basic("no colon"), "Bearer abc"):
        assert basic_credentials(bad) is None


def test_replay_key_is_a_digest_of_the_signature() -> None:
    signature = sign(SECRET, b"{}", NOW)["X-LinkFlow-Signature"]
    key = replay_key(signature)
    assert key == replay_key(signature.upper() + " ") != replay_key(signature[:-1])
    assert key.startswith("hmac:") and signature not in key and len(key) <= 255


def _check(
    auth: dict[str, str], secret: dict[str, str], headers: dict[str, str], body: bytes = b"{}"
) -> dict[str, str] | None:
    return auth_problem(
        WebhookAuth.model_validate(auth | {"credential": "c"}),
        secret,
        CIMultiDict(headers),
        body,
        NOW,
    )


def test_header_auth() -> None:
    auth = {"type": "header", "name": "X-Key"}
    assert _check(auth, {"secret": SECRET}, {"x-key": SECRET}) is None
    for headers in ({"X-Key": SECRET + "!"}, {}, {"Authorization": SECRET}):
        assert _check(auth, {"secret": SECRET}, headers) == {
            "path": "headers.X-Key",
            "message": "missing or wrong",
        }


def test_bearer_auth() -> None:
    auth = {"type": "bearer"}
    assert _check(auth, {"secret": SECRET}, {"Authorization": f"Bearer {SECRET}"}) is None
    assert _check(auth, {"secret": SECRET}, {"Authorization": f"bearer  {SECRET} "}) is None
    for value in (f"Basic {SECRET}", "Bearer other", "Bearer", SECRET):
        assert _check(auth, {"secret": SECRET}, {"Authorization": value}) is not None
    assert _check(auth, {"secret": SECRET}, {}) is not None


def test_basic_auth() -> None:
    auth = {"type": "basic"}
    data = {"username": "ada", "password": SECRET}
    assert _check(auth, data, {"Authorization": _basic(f"ada:{SECRET}")}) is None
    for value in (_basic(f"bob:{SECRET}"), _basic("ada:wrong"), f"Bearer {SECRET}"):
        assert _check(auth, data, {"Authorization": value}) == {
            "path": "headers.Authorization",
            "message": "missing or wrong",
        }


def test_hmac_auth() -> None:
    auth = {"type": "hmac"}
    body = b'{"a": 1}'
    assert _check(auth, {"secret": SECRET}, sign(SECRET, body, NOW), body) is None
    assert _check(auth, {"secret": SECRET}, sign(SECRET, body, NOW), b'{"a": 2}') is not None
    assert _check(auth, {"secret": SECRET}, sign("other", body, NOW), body) is not None
    stale = sign(SECRET, body, NOW - timedelta(seconds=301))
    problem = _check(auth, {"secret": SECRET}, stale, body)
    assert problem is not None and "300" in problem["message"]
    assert _check(auth, {"secret": SECRET}, {}, body) is not None


@pytest.mark.parametrize(
    ("auth", "headers"),
    [
        ({"type": "header", "name": "X-Key"}, {"X-Key": ""}),
        ({"type": "bearer"}, {"Authorization": "Bearer "}),
        ({"type": "basic"}, {"Authorization": _basic(":")}),
        ({"type": "hmac"}, sign("", b"{}", NOW)),
    ],
)
def test_a_credential_without_its_fields_accepts_nothing(
    auth: dict[str, str], headers: dict[str, str]
) -> None:
    assert _check(auth, {}, headers) is not None
    assert _check(auth, {"secret": "", "username": "", "password": ""}, headers) is not None
