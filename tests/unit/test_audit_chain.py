"""The audit chain's canonical form, chain links and the verifier's findings (pure)."""

from __future__ import annotations

import hashlib
import json

from hypothesis import given
from hypothesis import strategies as st

from domain.audit_chain import (
    GENESIS,
    NIL_WORKSPACE,
    ChainEvent,
    ChainVerifier,
    actor_text,
    canonical,
    canonical_json,
    chain_event,
    link,
    workspace_of,
)

WS = "0d9e4c1a-6b1f-4c55-9a51-2b7f1c0e8a11"
OTHER = "5f0c2b9e-1111-4a2b-8c3d-000000000002"
AGG = "7a1c3e55-2222-4b6d-9e0f-000000000003"
TOPIC = "domain.execution:Execution.NodeCompleted"


def _event(position: int, state: bytes = b'{"workspace_id":"' + WS.encode() + b'"}') -> ChainEvent:
    return chain_event(position, AGG, position, "domain.x:Thing.Happened", state, None, None)


def test_canonical_bytes_are_the_sorted_compact_json_of_the_fields() -> None:
    e = ChainEvent(7, WS, AGG, 3, "t", "ab" * 32, '{"id":"u","type":"user"}', "req-1")
    assert canonical(e) == (
        b'{"actor":{"id":"u","type":"user"},"aggregate_id":"' + AGG.encode() + b'",'
        b'"position":7,"request_id":"req-1","state_sha256":"' + b"ab" * 32 + b'",'
        b'"type":"t","version":3,"workspace_id":"' + WS.encode() + b'"}'
    )


@given(
    position=st.integers(min_value=1, max_value=2**62),
    version=st.integers(min_value=1, max_value=2**31),
    topic=st.text(),
    request_id=st.none() | st.text(),
    actor=st.none() | st.dictionaries(st.sampled_from(["type", "id", "workflow_id"]), st.text()),
)
def test_canonical_matches_canonical_json_for_any_fields(
    position: int, version: int, topic: str, request_id: str | None, actor: dict[str, str] | None
) -> None:
    actor_raw = None if actor is None else json.dumps(actor)
    e = ChainEvent(position, WS, AGG, version, topic, "00" * 32, actor_text(actor_raw), request_id)
    expected = {
        "actor": actor,
        "aggregate_id": AGG,
        "position": position,
        "request_id": request_id,
        "state_sha256": "00" * 32,
        "type": topic,
        "version": version,
        "workspace_id": WS,
    }
    assert canonical(e) == canonical_json(expected).encode()


def test_actor_text_is_canonical_whatever_the_column_spacing_and_null_when_absent() -> None:
    assert actor_text('{"type": "user", "id": "u1"}') == '{"id":"u1","type":"user"}'
    assert actor_text(None) == "null"


def test_workspace_of_reads_the_top_level_workspace_id_else_the_nil_uuid() -> None:
    state = b'{"a":{"workspace_id":"x"},"workspace_id":"' + WS.upper().encode() + b'"}'
    assert workspace_of(state, TOPIC) == WS
    assert workspace_of(b'{"user":"u"}', TOPIC) == NIL_WORKSPACE
    assert workspace_of(b'{"workspace_id":"not-a-uuid"}', TOPIC) == NIL_WORKSPACE
    assert workspace_of(b"not json", TOPIC) == NIL_WORKSPACE


def test_the_events_of_users_and_token_families_are_in_the_instance_chain() -> None:
    """Their `workspace_id` is a user's personal workspace: like the workspace event log
    (`linkflow_events.workspace_id` NULL), the chain keeps them out of that workspace."""
    state = b'{"workspace_id":"' + WS.encode() + b'","email":"a@b.c"}'
    assert workspace_of(state, "domain.user:User.UserRegistered") == NIL_WORKSPACE
    assert workspace_of(state, "domain.user:EmailIndex.EmailClaimed") == NIL_WORKSPACE
    assert workspace_of(state, "domain.token_family:TokenFamily.TokenFamilyStarted") == (
        NIL_WORKSPACE
    )
    assert workspace_of(state, "domain.workspace:Workspace.MemberAdded") == WS


def test_chain_event_digests_the_stored_state_bytes() -> None:
    state = b'{"workspace_id":"' + WS.encode() + b'","x":1}'
    e = chain_event(1, AGG, 1, "t", state, None, None)
    assert e.state_sha256 == hashlib.sha256(state).hexdigest()
    assert e.workspace_id == WS


def test_link_hashes_the_previous_hash_then_the_canonical_bytes() -> None:
    e = _event(1)
    assert link(GENESIS, e) == hashlib.sha256(bytes(32) + canonical(e)).digest()


def _record(events: list[ChainEvent]) -> dict[int, tuple[str, bytes]]:
    heads: dict[str, bytes] = {}
    out: dict[int, tuple[str, bytes]] = {}
    for e in events:
        heads[e.workspace_id] = link(heads.get(e.workspace_id, GENESIS), e)
        out[e.position] = (e.workspace_id, heads[e.workspace_id])
    return out


def _verify(log: dict[int, ChainEvent], record: dict[int, tuple[str, bytes]]) -> ChainVerifier:
    def window(ws: str, position: int) -> tuple[bytes, list[tuple[int, bytes]]]:
        return GENESIS, [(p, h) for p, (w, h) in sorted(record.items()) if w == ws]

    v = ChainVerifier(max(record), window=window)
    for position in sorted(set(log) | set(record)):
        rec = record.get(position)
        if v.row(position, log.get(position), rec[0] if rec else None, rec[1] if rec else None):
            break
    v.finish()
    return v


def _log(n: int = 6) -> dict[int, ChainEvent]:
    other = b'{"workspace_id":"' + OTHER.encode() + b'"}'
    return {p: _event(p, other if p % 3 == 0 else _event_state(p)) for p in range(1, n + 1)}


def _event_state(p: int) -> bytes:
    return b'{"workspace_id":"' + WS.encode() + b'","n":' + str(p).encode() + b"}"


def test_an_untouched_log_verifies() -> None:
    log = _log()
    v = _verify(log, _record(list(log.values())))
    assert v.finding is None and v.matched == 6


def test_an_altered_state_is_named_altered_at_its_position() -> None:
    log = _log()
    record = _record(list(log.values()))
    log[4] = chain_event(
        4, AGG, 4, log[4].type, b'{"workspace_id":"' + WS.encode() + b'","n":5}', None, None
    )
    v = _verify(log, record)
    assert v.finding is not None and (v.finding.position, v.finding.kind) == (4, "altered")


def test_a_deleted_event_is_named_removed() -> None:
    log = _log()
    record = _record(list(log.values()))
    del log[2]
    v = _verify(log, record)
    assert v.finding is not None and (v.finding.position, v.finding.kind) == (2, "removed")


def test_an_event_the_chain_never_saw_is_named_inserted() -> None:
    log = _log()
    record = _record(list(log.values()))
    del record[5]  # a gap in the record: the log gained an event there
    v = _verify(log, record)
    assert v.finding is not None and (v.finding.position, v.finding.kind) == (5, "inserted")


def test_two_swapped_events_are_named_reordered_at_the_first() -> None:
    log = _log()
    record = _record(list(log.values()))
    log[2], log[4] = log[4].at(2), log[2].at(4)
    v = _verify(log, record)
    assert v.finding is not None and (v.finding.position, v.finding.kind) == (2, "reordered")
    assert "position 4" in v.finding.detail


def test_a_rewritten_record_is_caught_by_the_signed_checkpoint() -> None:
    log = _log()
    honest = _record(list(log.values()))
    log[1] = chain_event(
        1, AGG, 1, "t", b'{"workspace_id":"' + WS.encode() + b'","n":9}', None, None
    )
    forged = _record(list(log.values()))
    v = ChainVerifier(6, checkpoints={(WS, 5): honest[5][1]})
    for p in sorted(log):
        if v.row(p, log[p], *forged[p]):
            break
    assert v.finding is not None and (v.finding.position, v.finding.kind) == (5, "checkpoint")


def test_events_past_the_recorded_head_are_not_findings() -> None:
    log = _log()
    record = _record([log[p] for p in range(1, 5)])
    v = _verify(log, record)
    assert v.finding is None and v.unchained == 2


def test_workspace_of_agrees_with_json_loads_on_malformed_and_padded_states() -> None:
    good = b' {"workspace_id":"' + WS.encode() + b'"} \n'
    assert workspace_of(good, TOPIC) == WS
    assert workspace_of(good + b"{}", TOPIC) == NIL_WORKSPACE  # two values: not JSON
    assert workspace_of(b'{"workspace_id":"' + WS.encode() + b'"', TOPIC) == NIL_WORKSPACE
    assert workspace_of(b"\xff\xfe", TOPIC) == NIL_WORKSPACE
