"""The `linkflow` command: `linkflow migrate` and `linkflow run <role>`."""

from __future__ import annotations

import argparse
import asyncio
import sys

from infra import logging as lf_logging
from infra.schema import migrate
from infra.settings import Settings

ROLE_CHOICES = ("gateway", "relay", "projector", "matching", "timers", "worker", "all")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="linkflow", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="create the database if needed and apply the schema")
    run = sub.add_parser("run", help="run one role (or all) in the foreground")
    run.add_argument("role", choices=ROLE_CHOICES)
    args = parser.parse_args(argv)

    settings = Settings()
    if args.command == "migrate":
        lf_logging.configure("migrate", settings.log_level)
        applied = migrate(settings)
        print(f"schema up to date on database {settings.pg_db}; applied now: {applied or 'none'}")
        return 0

    lf_logging.configure(args.role, settings.log_level)
    from gateways.roles import run as run_role  # imported late: `migrate` needs none of it

    try:
        import uvloop  # type: ignore[import-not-found]

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(run_role(args.role, settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
