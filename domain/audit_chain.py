"""The audit hash chain: the canonical form of a stored event, the per-workspace chain over it,
and the comparison of a recomputed chain with a recorded one (what `linkflow audit verify`
reports). The byte-exact definitions are documented in docs/audit.md; change nothing here
without changing that page (and every chain already recorded would stop verifying).

Canonical form of event n: the UTF-8 bytes of the JSON object
`{"actor", "aggregate_id", "position", "request_id", "state_sha256", "type", "version",
"workspace_id"}` with keys sorted, no whitespace (RFC 8785 style). Chain, per workspace:
`hash_n = SHA-256(hash_prev || canonical_n)`, the first with 32 zero bytes before it. Events
whose state names no workspace chain under the nil UUID (the instance chain).

Pure (no I/O, no clock). Imported by `engine/` (the chain consumer), `gateways/` (the CLI) and
`infra/` readers of the chain.
"""

from __future__ import annotations

import hashlib
import json
import json.scanner
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple
from uuid import UUID

from domain.base import OUTSIDE_WORKSPACE_LOGS

NIL_WORKSPACE = "00000000-0000-0000-0000-000000000000"
GENESIS = bytes(32)

_sha256 = hashlib.sha256
_TOPICS: dict[str, str] = {}
_ACTORS: dict[str | None, str] = {None: "null"}
_WORKSPACES: dict[str, str] = {}
_CACHE_MAX = 10_000
# The json module's scanner without its wrappers (a third of the cost of reading a workspace).
_scan = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[arg-type]
_JSON_SPACE = " \t\n\r"


def canonical_json(value: Any) -> str:
    """JSON text with sorted keys and no insignificant whitespace, non-ASCII as itself."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _json_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def actor_text(raw: str | None) -> str:
    """The canonical JSON of an event's `actor` column given as JSON text (None: `null`)."""
    known = _ACTORS.get(raw)
    if known is not None:
        return known
    assert raw is not None
    text = canonical_json(json.loads(raw))
    if len(_ACTORS) < _CACHE_MAX:
        _ACTORS[raw] = text
    return text


def workspace_of(state: bytes | str, topic: str) -> str:
    """The workspace an event belongs to: the nil UUID (the instance chain) for the events of
    users, the e-mail index and refresh-token families (`topic` in a module of
    OUTSIDE_WORKSPACE_LOGS: their `workspace_id` is a user's personal workspace, and they are
    in no workspace's event log); else its state's top-level `workspace_id` when that is a
    UUID (as lowercase hyphenated text), else the nil UUID."""
    if topic.partition(":")[0] in OUTSIDE_WORKSPACE_LOGS:
        return NIL_WORKSPACE
    try:
        text = (state.decode() if isinstance(state, bytes) else state).lstrip(_JSON_SPACE)
        data, end = _scan(text, 0)
    except (ValueError, StopIteration):
        return NIL_WORKSPACE
    if end != len(text) and text[end:].strip(_JSON_SPACE):
        return NIL_WORKSPACE  # not one JSON value
    raw = data.get("workspace_id") if isinstance(data, dict) else None
    if not isinstance(raw, str):
        return NIL_WORKSPACE
    known = _WORKSPACES.get(raw)
    if known is not None:
        return known
    try:
        text = str(UUID(raw))
    except ValueError:
        text = NIL_WORKSPACE
    if len(_WORKSPACES) < _CACHE_MAX:
        _WORKSPACES[raw] = text
    return text


def state_sha256(state: bytes) -> str:
    return _sha256(state).hexdigest()


class ChainEvent(NamedTuple):
    """What the canonical form holds of one event (ids as lowercase hyphenated UUID text,
    `actor` as canonical JSON text, `null` when absent)."""

    position: int
    workspace_id: str
    aggregate_id: str
    version: int
    type: str
    state_sha256: str
    actor: str
    request_id: str | None

    def at(self, position: int) -> ChainEvent:
        return self._replace(position=position)


def canonical(e: ChainEvent) -> bytes:
    """The canonical bytes of an event (same as `canonical_json` of its fields as an object)."""
    topic = _TOPICS.get(e.type)
    if topic is None:
        topic = _json_string(e.type)
        if len(_TOPICS) < _CACHE_MAX:
            _TOPICS[e.type] = topic
    request = "null" if e.request_id is None else _json_string(e.request_id)
    return (
        f'{{"actor":{e.actor},"aggregate_id":"{e.aggregate_id}","position":{e.position},'
        f'"request_id":{request},"state_sha256":"{e.state_sha256}","type":{topic},'
        f'"version":{e.version},"workspace_id":"{e.workspace_id}"}}'
    ).encode()


def link(previous: bytes, event: ChainEvent) -> bytes:
    """The chain hash of `event` following `previous`."""
    return _sha256(previous + canonical(event)).digest()


def chain_event(
    position: int,
    aggregate_id: str,
    version: int,
    topic: str,
    state: bytes,
    actor: str | None,
    request_id: str | None,
) -> ChainEvent:
    """The chain's view of one stored row (`actor` as the column's JSON text or None)."""
    return ChainEvent(
        position,
        workspace_of(state, topic),
        aggregate_id,
        version,
        topic,
        _sha256(state).hexdigest(),
        actor_text(actor),
        request_id,
    )


# ---------------------------------------------------------------- comparing with a record


@dataclass(frozen=True)
class Finding:
    """The first place where the log and its recorded chain or checkpoints disagree."""

    position: int
    kind: str  # altered | removed | inserted | reordered | checkpoint | signature
    workspace_id: str
    detail: str

    def __str__(self) -> str:
        return (
            f"position {self.position} ({self.kind}, workspace {self.workspace_id}): {self.detail}"
        )


# The recorded chain of a workspace near a position: [(position, hash)] in order, and the
# recorded hash before the first of them (GENESIS when the window starts the chain).
Window = tuple[bytes, Sequence[tuple[int, bytes]]]
WindowLookup = Callable[[str, int], Window]


class ChainVerifier:
    """Recomputes every chain from the log's rows, in position order, and compares each with
    the recorded chain (`audit_chain`) and the signed checkpoints' chain hashes. Feed it every
    position of the log and of the record (`row`), then `finish`; it stops at the first finding.

    `chained_upto`: the highest recorded position; an event past it is not chained yet (not a
    finding). `checkpoints`: {(workspace, position): chain hash} of checkpoints whose
    signatures were already checked. `window`: the recorded chain around a position, used only
    to tell a reordered event from an altered one."""

    def __init__(
        self,
        chained_upto: int,
        checkpoints: dict[tuple[str, int], bytes] | None = None,
        window: WindowLookup | None = None,
        only_workspace: str | None = None,
    ) -> None:
        self.chained_upto = chained_upto
        self.checkpoints = dict(checkpoints or {})
        self.checkpoint_positions = {position for _, position in self.checkpoints}
        self.window = window
        self.only = only_workspace
        self.heads: dict[str, bytes] = {}
        self.last_checkpoint: dict[str, int] = {}
        self.events = 0
        self.matched = 0
        self.unchained = 0
        self.checkpoints_matched = 0
        self.finding: Finding | None = None

    def row(
        self,
        position: int,
        event: ChainEvent | None,
        recorded_workspace: str | None,
        recorded_hash: bytes | None,
    ) -> Finding | None:
        """One position: the log's event there (None: none) and the record's row (None: none)."""
        if event is None:
            if recorded_hash is None:
                return None
            return self._found(
                Finding(
                    position,
                    "removed",
                    recorded_workspace or NIL_WORKSPACE,
                    "the chain records an event here; the log has none",
                )
            )
        ws = event.workspace_id
        if self.only is not None and ws != self.only and recorded_workspace is None:
            return None  # another workspace's event (verify --workspace)
        self.events += 1
        previous = self.heads.get(ws, GENESIS)
        digest = _sha256(previous + canonical(event)).digest()
        self.heads[ws] = digest
        if recorded_hash is None:
            if position <= self.chained_upto:
                return self._found(
                    Finding(
                        position,
                        "inserted",
                        ws,
                        f"an event ({event.type}, aggregate {event.aggregate_id} version"
                        f" {event.version}) that the chain never recorded",
                    )
                )
            self.unchained += 1
        elif recorded_workspace != ws:
            return self._found(
                Finding(
                    position,
                    "altered",
                    ws,
                    f"the event was recorded in workspace {recorded_workspace}; its state now"
                    f" names {ws}",
                )
            )
        elif digest != recorded_hash:
            return self._found(self._mismatch(position, event, previous))
        else:
            self.matched += 1
        if position in self.checkpoint_positions:
            signed = self.checkpoints.pop((ws, position), None)
            if signed is not None:
                if signed != digest:
                    since = self.last_checkpoint.get(ws)
                    after = f"after position {since}" if since else "from the chain's start"
                    return self._found(
                        Finding(
                            position,
                            "checkpoint",
                            ws,
                            "the signed checkpoint here does not match the recomputed chain:"
                            f" an event of this workspace at or before it ({after}) was changed,"
                            " and the recorded chain rewritten to match",
                        )
                    )
                self.checkpoints_matched += 1
                self.last_checkpoint[ws] = position
        return None

    def _mismatch(self, position: int, event: ChainEvent, previous: bytes) -> Finding:
        moved_from = self._recorded_at(event, position)
        if moved_from is not None:
            return Finding(
                position,
                "reordered",
                event.workspace_id,
                f"the event here ({event.type}, aggregate {event.aggregate_id} version"
                f" {event.version}) was recorded at position {moved_from}",
            )
        return Finding(
            position,
            "altered",
            event.workspace_id,
            f"the event ({event.type}, aggregate {event.aggregate_id} version {event.version})"
            " no longer hashes to its recorded chain hash",
        )

    def _recorded_at(self, event: ChainEvent, position: int) -> int | None:
        """The other recorded position this very event hashes to, if any (a reordering)."""
        if self.window is None:
            return None
        before, rows = self.window(event.workspace_id, position)
        previous = before
        for other, recorded in rows:
            if other != position and link(previous, event.at(other)) == recorded:
                return other
            previous = recorded
        return None

    def finish(self) -> Finding | None:
        """After the last row: a signed checkpoint whose position the log no longer has."""
        if self.finding is not None:
            return self.finding
        relevant = [
            (position, ws)
            for ws, position in self.checkpoints
            if position <= self.chained_upto and (self.only is None or ws == self.only)
        ]
        if relevant:
            position, ws = min(relevant)
            return self._found(
                Finding(
                    position,
                    "removed",
                    ws,
                    "a signed checkpoint names this position; the log has no such event of"
                    " the workspace",
                )
            )
        return None

    def _found(self, finding: Finding) -> Finding:
        if self.finding is None:
            self.finding = finding
        return self.finding
