"""`linkflow replay check`: the command line around `projections.replay_check` — its arguments,
progress bars on stderr (tqdm, shown when stderr is a terminal), the summary on stdout (text, or
one JSON line with `--json`) and the exit status (0: no difference, 1: any). Imported by
`gateways.cli` only; what the check needs is imported when it runs (not for `linkflow migrate`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from infra.settings import Settings
    from projections.replay_check import CheckReport, Progress


def add_parser(sub: Any) -> None:
    """The `replay` command and its `check` subcommand, on `linkflow`'s subparsers."""
    replay = sub.add_parser("replay", help="check the log replays with the current code")
    commands = replay.add_subparsers(dest="replay_command", required=True)
    run = commands.add_parser(
        "check",
        help="rebuild every read model from the log into scratch tables and diff them with the"
        " live ones; re-fold every aggregate; exit 1 on any difference",
    )
    run.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    run.add_argument(
        "--max-rows",
        type=int,
        default=1000,
        help="differing rows detailed per table (all are counted; default 1000)",
    )
    run.add_argument("--page", type=int, default=1000, help="events read per batch")


def main(args: argparse.Namespace, settings: Settings) -> int:
    from tqdm import tqdm

    from infra import logging as lf_logging
    from infra.eventstore import EventStore
    from projections.replay_check import check

    lf_logging.configure("replay", settings.log_level)
    if args.max_rows < 1 or args.page < 1:
        print("--max-rows and --page must be at least 1", file=sys.stderr)
        return 2
    bars: list[Any] = []

    def bar(label: str, total: int) -> Progress:
        for done in bars:  # one stage at a time
            done.close()
        progress = tqdm(total=total, desc=label, unit="ev", file=sys.stderr, dynamic_ncols=True)
        bars.append(progress)
        return progress.update

    # Ctrl-C and SIGTERM stop it and still drop the scratch schema (asyncio.run cancels the
    # check, whose cleanup runs); also where the shell started it with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    store = EventStore(settings)
    try:
        report = asyncio.run(check(settings, store, bar, page=args.page, max_rows=args.max_rows))
    except KeyboardInterrupt:
        print("replay check interrupted (scratch schema dropped)", file=sys.stderr)
        return 130
    finally:
        for progress in bars:
            progress.close()
        store.close()
    print(json.dumps(summary(report), default=str) if args.json else text(report))
    return 0 if report.ok else 1


def summary(report: CheckReport) -> dict[str, Any]:
    """The machine-readable summary."""
    models, aggregates = report.read_models, report.aggregates
    return {
        "ok": report.ok,
        "position": models.position,
        "head": models.head,
        "events_replayed": models.events,
        "tables": {
            t.table: {
                "live_rows": t.live_rows,
                "rebuilt_rows": t.rebuilt_rows,
                "differing_rows": t.differing_rows,
            }
            for t in models.tables
        },
        "differences": [
            {
                "table": d.table,
                "key": d.key,
                "column": d.column,
                "live": d.live,
                "rebuilt": d.rebuilt,
            }
            for t in models.tables
            for d in t.differences
        ],  # fmt: skip
        "undecodable": [
            {"position": position, "topic": topic, "error": error}
            for position, topic, error in models.undecodable
        ],
        "aggregates": dict(sorted(aggregates.per_type.items())),
        "events_refolded": aggregates.events,
        "compared_with_read_models": aggregates.compared,
        "failures": [
            {
                "aggregate_id": f.aggregate_id,
                "aggregate_type": f.aggregate_type,
                "check": f.check,
                "version": f.version,
                "topic": f.topic,
                "message": f.message,
            }
            for f in aggregates.failures
        ],  # fmt: skip
    }


def text(report: CheckReport) -> str:
    """The summary for people."""
    models, aggregates = report.read_models, report.aggregates
    lines = [f"log head {models.head}; live projector at {models.position}"]
    if models.position < models.head:
        lines.append(
            f"  the projector is {models.head - models.position} events behind: read models"
            f" compared as of position {models.position}"
        )
    lines.append(f"read models rebuilt from {models.events} events (live / rebuilt / differing):")
    for t in models.tables:
        lines.append(f"  {t.table:<26} {t.live_rows:>9} {t.rebuilt_rows:>9} {t.differing_rows:>9}")
    lines.append(
        f"aggregates re-folded from {aggregates.events} events"
        f" ({aggregates.compared} compared with their read model):"
    )
    for kind, count in sorted(aggregates.per_type.items()):
        lines.append(f"  {kind:<26} {count:>9}")
    problems = [d.describe() for t in models.tables for d in t.differences]
    for t in models.tables:
        shown = len({tuple(d.key.values()) for d in t.differences})
        if t.differing_rows > shown:
            problems.append(f"{t.table}: {t.differing_rows - shown} more differing rows not shown")
    problems += [
        f"undecodable event at position {position} ({topic}), skipped by the projector: {error}"
        for position, topic, error in models.undecodable
    ]
    problems += [f.describe() for f in aggregates.failures]
    if problems:
        lines.append(f"DIFFERENCES ({len(problems)}):")
        lines += [f"  {p}" for p in problems]
    else:
        lines.append("no differences: the log replays to the live read models")
    return "\n".join(lines)
