"""The `linkflow` command: `migrate`, `run <role>`, `rebuild-read-models`, `replay check`,
`audit …`."""

from __future__ import annotations

import argparse
import asyncio
import sys

from gateways import audit_cli, replay_cli
from infra import logging as lf_logging
from infra.schema import migrate
from infra.settings import Settings

ROLE_CHOICES = (
    "gateway",
    "relay",
    "projector",
    "matching",
    "timers",
    "callbacks",
    "worker",
    "audit",
    "all",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="linkflow", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="create the database if needed and apply the schema")
    sub.add_parser(
        "rebuild-read-models",
        help="drop the visibility read models and replay the event log into them"
        " (stop the projector first)",
    )
    run = sub.add_parser("run", help="run one role (or all) in the foreground")
    run.add_argument("role", choices=ROLE_CHOICES)
    replay_cli.add_parser(sub)
    audit_cli.add_parser(sub)
    args = parser.parse_args(argv)

    settings = Settings()
    if args.command == "migrate":
        lf_logging.configure("migrate", settings.log_level)
        applied = migrate(settings)
        print(f"schema up to date on database {settings.pg_db}; applied now: {applied or 'none'}")
        return 0
    if args.command == "replay":
        return replay_cli.main(args, settings)
    if args.command == "audit":
        lf_logging.configure("audit", settings.log_level)
        return audit_cli.run(args, settings)

    from gateways import roles  # imported late: `migrate` needs none of it

    if args.command == "rebuild-read-models":
        lf_logging.configure("rebuild", settings.log_level)
        replayed = asyncio.run(roles.rebuild_read_models(settings))
        if replayed is None:
            print("a projector is running: stop it first", file=sys.stderr)
            return 1
        print(f"read models rebuilt from {replayed} events")
        return 0

    lf_logging.configure(args.role, settings.log_level)
    # Command threads wait on PostgreSQL and hand each other the group commit: with the
    # default 5 ms GIL switch interval each hand-off can wait that long behind the event loop.
    sys.setswitchinterval(settings.switch_interval_s)

    try:
        import uvloop  # type: ignore[import-not-found]

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(roles.run(args.role, settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
