"""`linkflow audit verify | export | verify-export`: the auditor's commands (docs/audit.md).

- `verify [--workspace W] [--public-key K ...]` recomputes every chain from `linkflow_events`,
  compares it with the recorded chain (`audit_chain`) and the signed checkpoints, and names the
  first position where the log was altered, removed, inserted or reordered (exit 1), else prints
  a summary (exit 0).
- `export --workspace W [--after P] [--until Q] -o FILE` writes the workspace's events as
  CloudEvents JSON Lines with their chain hashes and a manifest of the covering checkpoints.
- `verify-export FILE --public-key K` checks such a file with no database and no server.

Progress bars go to stderr (tqdm; shown only on a terminal). Imported by `gateways.cli`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any
from uuid import UUID

from tqdm import tqdm

from domain.audit_chain import ChainVerifier, Finding, chain_event, link
from domain.audit_export import (
    ExportError,
    ExportVerifier,
    checkpoint_entry,
    event_line,
    manifest,
)
from domain.audit_signing import b64, checkpoint_message, signed_at_text, unb64, verify_signature
from infra import audit_store
from infra.settings import Settings

PROGRESS_EVERY = 10_000


def add_parser(sub: Any) -> None:
    """The `audit` subcommand and its own subcommands."""
    audit = sub.add_parser("audit", help="verify the audit hash chain; export for auditors")
    cmds = audit.add_subparsers(dest="audit_command", required=True)
    verify = cmds.add_parser(
        "verify", help="recompute the chains from the event table and check the checkpoints"
    )
    verify.add_argument("--workspace", type=_uuid, help="only this workspace's chain")
    verify.add_argument(
        "--public-key",
        action="append",
        default=[],
        help="trust only this public key (base64 or a file holding it; repeatable) instead of"
        " the keys listed in the database",
    )
    export = cmds.add_parser("export", help="a workspace's events as CloudEvents JSON Lines")
    export.add_argument("--workspace", type=_uuid, required=True)
    export.add_argument("--after", type=int, default=0, help="events after this position")
    export.add_argument("--until", type=int, default=None, help="events up to this position")
    export.add_argument("-o", "--output", required=True, help="the file to write ('-': stdout)")
    check = cmds.add_parser("verify-export", help="check an export offline (no database)")
    check.add_argument("file")
    check.add_argument("--public-key", required=True, help="base64 public key, or a file of it")


def _uuid(text: str) -> str:
    try:
        return str(UUID(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a UUID: {text!r}") from exc


def public_key_arg(value: str) -> bytes:
    """A public key given as base64 text or as a file holding it."""
    path = Path(value)
    text = path.read_text() if len(value) < 4096 and path.is_file() else value
    return unb64(text, 32)


def run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        if args.audit_command == "verify":
            keys = [public_key_arg(k) for k in args.public_key]
            report = verify(settings, args.workspace, keys or None)
            print(report.text())
            return 0 if report.finding is None else 1
        if args.audit_command == "export":
            if args.output == "-":
                summary = export(settings, args.workspace, args.after, args.until, sys.stdout)
            else:
                with open(args.output, "w", encoding="utf-8") as out:
                    summary = export(settings, args.workspace, args.after, args.until, out)
            print(summary, file=sys.stderr)
            return 0
        key = public_key_arg(args.public_key)
        with open(args.file, "rb") as handle:
            checked = verify_export(handle, key, Path(args.file).stat().st_size)
        print(checked)
        return 0
    except ExportError as exc:
        print(f"export does not verify: {exc}")
        return 1
    except (ValueError, OSError) as exc:
        print(f"linkflow audit: {exc}", file=sys.stderr)
        return 2


# ---------------------------------------------------------------- verify


@dataclass
class VerifyReport:
    finding: Finding | None
    events: int
    matched: int
    unchained: int
    checkpoints: int
    seconds: float
    workspace: str | None

    def text(self) -> str:
        scope = f"workspace {self.workspace}" if self.workspace else "every workspace"
        rate = self.events / self.seconds if self.seconds > 0 else 0.0
        if self.finding is not None:
            return f"FAILED at {self.finding}"
        return (
            f"OK: {self.events} events of {scope} recomputed; {self.matched} match the recorded"
            f" chain, {self.unchained} not chained yet; {self.checkpoints} signed checkpoints"
            f" verified ({self.seconds:.1f} s, {rate:,.0f} events/s)"
        )


def _signature_finding(
    rows: Iterable[dict[str, Any]], keys: dict[str, bytes], trusted: list[bytes] | None
) -> tuple[Finding | None, dict[tuple[str, int], bytes]]:
    """The first checkpoint whose signature does not verify, and the ones that do."""
    good: dict[tuple[str, int], bytes] = {}
    for cp in rows:
        ws, position, chain_hash = cp["workspace_id"], int(cp["position"]), bytes(cp["chain_hash"])
        message = checkpoint_message(ws, position, chain_hash, cp["signed_at"])
        candidates = trusted if trusted is not None else [keys.get(cp["key_id"], b"")]
        signature = bytes(cp["signature"])
        if not any(len(k) == 32 and verify_signature(k, message, signature) for k in candidates):
            why = (
                "not signed by a trusted public key"
                if trusted is not None or cp["key_id"] in keys
                else f"signed with key {cp['key_id']!r}, which is not listed"
            )
            return Finding(position, "signature", ws, f"the checkpoint here is {why}"), good
        good[(ws, position)] = chain_hash
    return None, good


def verify(
    settings: Settings, workspace: str | None = None, trusted: list[bytes] | None = None
) -> VerifyReport:
    started = time.monotonic()
    with audit_store.connect(settings) as conn:
        log_head, chained_upto = audit_store.heads(conn)
        bad, good = _signature_finding(
            audit_store.checkpoints(conn, workspace), audit_store.public_keys(conn), trusted
        )
        verifier = ChainVerifier(
            chained_upto,
            good,
            window=lambda ws, position: audit_store.window(conn, ws, position),
            only_workspace=workspace,
        )
        row = verifier.row
        events = audit_store.log_rows(conn, workspace)
        record = audit_store.chain_rows(conn, workspace)
        e = next(events, None)
        c = next(record, None)
        seen = 0
        with tqdm(
            total=log_head, unit="ev", unit_scale=True, desc="verify", disable=None, leave=False
        ) as bar:
            while e is not None or c is not None:
                if c is None or (e is not None and e[0] < c[0]):
                    assert e is not None
                    found = row(e[0], chain_event(*e), None, None)
                    e = next(events, None)
                elif e is None or c[0] < e[0]:
                    found = row(c[0], None, c[1], c[2])
                    c = next(record, None)
                else:
                    found = row(e[0], chain_event(*e), c[1], c[2])
                    e = next(events, None)
                    c = next(record, None)
                if found is not None:
                    break
                seen += 1
                if seen % PROGRESS_EVERY == 0:
                    bar.update(PROGRESS_EVERY)
        finding = verifier.finish()
        conn.rollback()
    if bad is not None and (finding is None or bad.position < finding.position):
        finding = bad
    return VerifyReport(
        finding,
        verifier.events,
        verifier.matched,
        verifier.unchained,
        verifier.checkpoints_matched,
        time.monotonic() - started,
        workspace,
    )


# ---------------------------------------------------------------- export


def export(settings: Settings, workspace: str, after: int, until: int | None, out: IO[str]) -> str:
    """Write the export; returns a one-line summary. ValueError if the log no longer matches
    the recorded chain (run `linkflow audit verify`)."""
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    with audit_store.connect(settings) as conn:
        start = audit_store.chain_before(conn, workspace, after)
        previous = start
        count, first, last = 0, None, None
        rows = audit_store.workspace_rows(conn, workspace, after, until)
        with tqdm(unit="ev", unit_scale=True, desc="export", disable=None, leave=False) as bar:
            for position, recorded, agg, version, topic, state, actor, request_id in rows:
                if agg is None or version is None or topic is None or state is None:
                    raise ValueError(
                        f"position {position}: the log has no event the chain"
                        " recorded (run `linkflow audit verify`)"
                    )
                e = chain_event(position, agg, version, topic, bytes(state), actor, request_id)
                digest = link(previous, e)
                if e.workspace_id != workspace or digest != bytes(recorded):
                    raise ValueError(
                        f"position {position}: the event does not match its"
                        " recorded chain hash (run `linkflow audit verify`)"
                    )
                out.write(dumps(event_line(e, bytes(state), previous, digest)) + "\n")
                previous = digest
                count += 1
                first = first if first is not None else position
                last = position
                if count % PROGRESS_EVERY == 0:
                    bar.update(PROGRESS_EVERY)
        covering = [
            checkpoint_entry(
                int(cp["position"]),
                bytes(cp["chain_hash"]),
                signed_at_text(cp["signed_at"]),
                cp["key_id"],
                b64(bytes(cp["signature"])),
            )
            for cp in (
                audit_store.checkpoints(conn, workspace, after, last) if last is not None else []
            )
        ]
        conn.rollback()
    now = signed_at_text(datetime.now(UTC))
    line = manifest(workspace, after, until, count, first, last, start, previous, covering, now)
    out.write(dumps(line) + "\n")
    covered = max((cp["position"] for cp in covering), default=None)
    return (
        f"exported {count} events of workspace {workspace} (positions {first}..{last});"
        f" {len(covering)} signed checkpoints, the last at position {covered}"
    )


# ---------------------------------------------------------------- verify-export


def verify_export(lines: IO[bytes], public_key: bytes, size: int = 0) -> str:
    """Check an export file; returns a summary, raises ExportError naming the bad line."""
    started = time.monotonic()
    verifier = ExportVerifier(public_key)
    feed = verifier.feed
    done = 0
    with tqdm(
        total=size or None,
        unit="B",
        unit_scale=True,
        desc="verify-export",
        disable=None,
        leave=False,
    ) as bar:
        for raw in lines:
            feed(raw)
            done += len(raw)
            if done >= 4_000_000:
                bar.update(done)
                done = 0
    verifier.finish()
    seconds = time.monotonic() - started
    rate = verifier.events / seconds if seconds > 0 else 0.0
    tail = (
        ""
        if verifier.covered_upto >= verifier.last_position
        else f"; events after position {verifier.covered_upto} are not covered by a signature"
    )
    return (
        f"OK: {verifier.events} events of workspace {verifier.workspace} verified,"
        f" {verifier.checkpoints} signed checkpoints, the last at position"
        f" {verifier.covered_upto}{tail} ({seconds:.1f} s, {rate:,.0f} events/s)"
    )
