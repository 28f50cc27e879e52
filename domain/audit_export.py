"""Audit exports: one CloudEvents 1.0 JSON object per event (JSON Lines) carrying the chain
fields, a closing manifest line with the signed checkpoints that cover the range, and the
offline check of such a file (`linkflow audit verify-export`). The format is documented in
docs/audit.md.

An event line's `data` is the event's stored JSON text, byte-exact, as a JSON string; the
verifier digests it itself. Where the event holds secret material (credential data, sealed or
not; hashes of passwords, tokens and API keys; webhook tokens) those fields are left out, `data`
is the rest (canonical JSON text), `redacted` names the fields left out, and the `statesha256`
extension carries the digest of the stored bytes (the only part of such an event the chain can
then vouch for). Extensions: `position`, `prevhash`, `hash` (hex), `actor` (canonical JSON text
of the actor, `null` when none was recorded), `requestid` (absent when none), `aggregateversion`.

Pure (no I/O). Imported by `gateways/` (the CLI).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from domain.audit_chain import GENESIS, ChainEvent, canonical, canonical_json
from domain.audit_signing import checkpoint_message, unb64, verify_signature

FORMAT = "linkflow-audit-export/1"
SOURCE = "/api/v1/workspaces/{workspace_id}"
# Top-level fields of an event's state that an export leaves out.
SECRET_FIELDS = frozenset(
    {"sealed_data", "secret_hash", "token_hash", "password_hash", "webhook_token"}
)


def _time(data: Any) -> str | None:
    stamp = data.get("timestamp") if isinstance(data, dict) else None
    if isinstance(stamp, dict):
        stamp = stamp.get("_data_")
    return stamp if isinstance(stamp, str) else None


def event_line(e: ChainEvent, state: bytes, previous: bytes, digest: bytes) -> dict[str, Any]:
    """The CloudEvents object of one exported event (`previous`/`digest`: its chain hashes)."""
    text = state.decode()
    parsed = json.loads(text)
    secret = sorted(SECRET_FIELDS.intersection(parsed)) if isinstance(parsed, dict) else []
    line: dict[str, Any] = {
        "specversion": "1.0",
        "id": f"{e.aggregate_id}:{e.version}",
        "source": SOURCE.format(workspace_id=e.workspace_id),
        "type": e.type,
        "subject": e.aggregate_id,
    }
    stamp = _time(parsed)
    if stamp is not None:
        line["time"] = stamp
    line["datacontenttype"] = "application/json"
    if secret:
        line["data"] = canonical_json({k: v for k, v in parsed.items() if k not in secret})
        line["redacted"] = ",".join(secret)
        line["statesha256"] = e.state_sha256
    else:
        line["data"] = text
    line["position"] = e.position
    line["aggregateversion"] = e.version
    line["actor"] = e.actor
    if e.request_id is not None:
        line["requestid"] = e.request_id
    line["prevhash"] = previous.hex()
    line["hash"] = digest.hex()
    return line


def checkpoint_entry(
    position: int, chain_hash: bytes, signed_at: str, key_id: str, signature: str
) -> dict[str, Any]:
    return {
        "position": position,
        "chain_hash": chain_hash.hex(),
        "signed_at": signed_at,
        "key_id": key_id,
        "signature": signature,
    }


def manifest(
    workspace_id: str,
    after: int,
    until: int | None,
    lines: int,
    first: int | None,
    last: int | None,
    prevhash: bytes,
    head: bytes,
    checkpoints: Sequence[dict[str, Any]],
    exported_at: str,
) -> dict[str, Any]:
    return {
        "manifest": {
            "format": FORMAT,
            "workspace_id": workspace_id,
            "after": after,
            "until": until,
            "events": lines,
            "first_position": first,
            "last_position": last,
            "prevhash": prevhash.hex(),
            "head_hash": head.hex(),
            "checkpoints": list(checkpoints),
            "exported_at": exported_at,
        }
    }


class ExportError(ValueError):
    """The export does not verify; `line` is the 1-based line number it names."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line


@dataclass
class ExportVerifier:
    """Checks an export line by line with no database: each event's chain hash recomputed from
    its fields and the previous line's hash, then the manifest's checkpoints against the
    recomputed hashes and their Ed25519 signatures by `public_key` (raw 32 bytes)."""

    public_key: bytes
    key_ids: set[str] = field(default_factory=set)
    lines: int = 0
    events: int = 0
    head: bytes | None = None
    first_prev: bytes | None = None
    workspace: str | None = None
    hashes: dict[int, bytes] = field(default_factory=dict)
    done: bool = False
    checkpoints: int = 0
    covered_upto: int = 0
    last_position: int = 0

    def feed(self, raw: bytes | str) -> None:
        self.lines += 1
        n = self.lines
        if self.done:
            raise ExportError(n, "a line after the manifest")
        try:
            obj = json.loads(raw)
        except ValueError as exc:
            raise ExportError(n, f"not JSON: {exc}") from exc
        if not isinstance(obj, dict):
            raise ExportError(n, "not a JSON object")
        if "manifest" in obj:
            self._manifest(n, obj["manifest"])
        else:
            self._event(n, obj)

    def _event(self, n: int, obj: dict[str, Any]) -> None:
        try:
            data = obj["data"]
            digest = obj.get("statesha256")
            if digest is None:
                digest = hashlib.sha256(data.encode()).hexdigest()
            workspace = obj["source"].rsplit("/", 1)[-1]
            request_id = obj.get("requestid")
            event = ChainEvent(
                int(obj["position"]),
                workspace,
                obj["subject"],
                int(obj["aggregateversion"]),
                obj["type"],
                digest,
                obj["actor"],
                request_id,
            )
            if not isinstance(event.actor, str) or not isinstance(event.type, str):
                raise TypeError("actor and type must be strings")
            prev = bytes.fromhex(obj["prevhash"])
            claimed = bytes.fromhex(obj["hash"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ExportError(n, f"not an export event line: {exc!r}") from exc
        if obj.get("specversion") != "1.0":
            raise ExportError(n, "specversion is not 1.0")
        if self.workspace is None:
            self.workspace = workspace
        elif workspace != self.workspace:
            raise ExportError(n, f"an event of another workspace ({workspace})")
        if self.head is None:
            self.first_prev = prev
        elif prev != self.head:
            raise ExportError(
                n,
                "prevhash is not the previous line's hash (a line removed, inserted or reordered)",
            )
        if event.position <= self.last_position:
            raise ExportError(n, "positions do not increase (a line reordered)")
        digest_now = hashlib.sha256(prev + canonical(event)).digest()
        if digest_now != claimed:
            raise ExportError(
                n, f"the event at position {event.position} does not hash to its hash (altered)"
            )
        self.head = digest_now
        self.last_position = event.position
        self.hashes[event.position] = digest_now
        self.events += 1

    def _manifest(self, n: int, m: Any) -> None:
        self.done = True
        try:
            workspace = m["workspace_id"]
            checkpoints = m["checkpoints"]
            count = int(m["events"])
            head = bytes.fromhex(m["head_hash"])
            prevhash = bytes.fromhex(m["prevhash"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ExportError(n, f"not a manifest: {exc!r}") from exc
        if count != self.events:
            raise ExportError(n, f"the manifest counts {count} events, the file has {self.events}")
        if self.workspace is not None and workspace != self.workspace:
            raise ExportError(n, "the manifest names another workspace")
        if (self.head or prevhash) != head or (self.first_prev or prevhash) != prevhash:
            raise ExportError(n, "the manifest's hashes do not match the events")
        for cp in checkpoints:
            try:
                position = int(cp["position"])
                chain_hash = bytes.fromhex(cp["chain_hash"])
                signed_at = datetime.fromisoformat(cp["signed_at"].replace("Z", "+00:00"))
                signature = unb64(cp["signature"], 64)
                key_id = cp["key_id"]
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise ExportError(n, f"a malformed checkpoint: {exc!r}") from exc
            if self.key_ids and key_id not in self.key_ids:
                raise ExportError(
                    n,
                    f"the checkpoint at {position} is signed by key {key_id!r},"
                    " not by the given public key",
                )
            message = checkpoint_message(workspace, position, chain_hash, signed_at)
            if not verify_signature(self.public_key, message, signature):
                raise ExportError(
                    n,
                    f"the checkpoint at position {position} is not signed by the given public key",
                )
            if self.hashes.get(position) != chain_hash:
                raise ExportError(
                    n,
                    f"the signed checkpoint at position {position} does not"
                    " match the events' chain",
                )
            self.checkpoints += 1
            self.covered_upto = max(self.covered_upto, position)

    def finish(self) -> None:
        if not self.done:
            raise ExportError(self.lines + 1, "the manifest line is missing (a truncated file)")
        if self.events and not self.checkpoints:
            raise ExportError(self.lines, "no signed checkpoint covers these events")


__all__ = ["GENESIS", "ExportError", "ExportVerifier", "event_line", "manifest"]
