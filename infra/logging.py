"""Structured logging: one JSON object per line on stderr, with a `role` and free fields.

Use `log = get_logger(__name__)` then `log.info("event_name", extra={"fields": {...}})`, or the
helper `log_event(log, "event_name", key=value)` (`level=` for another level than INFO).
A line written while an HTTP request is served carries its `request_id` (`infra.origin`).
Everything may import this module.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from infra.origin import current_origin

_ROLE = {"role": "-"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "role": _ROLE["role"],
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = current_origin().request_id
        if request_id is not None:
            line["request_id"] = request_id
        fields = getattr(record, "fields", None)
        if fields:
            line.update(fields)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class MalformedRequestFilter(logging.Filter):
    """aiohttp logs a request it cannot even parse (bad header bytes, …) as an error with a
    traceback; it has already answered 400, so it is the client's fault: keep one warning line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and type(exc).__name__ in ("BadHttpMessage", "BadStatusLine"):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg, record.args = f"malformed request refused: {exc}", ()
            record.exc_info = None
        return True


def configure(role: str, level: str = "INFO") -> None:
    _ROLE["role"] = role
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.server").addFilter(MalformedRequestFilter())
    for noisy in ("aiohttp.access", "faststream", "eventsourcing"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # psycopg_pool warns on every failed (re)connection attempt and every discarded connection:
    # lines per second while PostgreSQL is away. infra.outages says it once per outage.
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)


def log_event(logger: logging.Logger, msg: str, level: int = logging.INFO, **fields: Any) -> None:
    logger.log(level, msg, extra={"fields": fields})
