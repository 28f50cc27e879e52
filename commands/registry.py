"""Every command type and its handler, gathered from the handler modules of `commands/`.
Imported by `commands.bus` only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from commands import callbacks, credentials, handlers, identity, variables
from commands.handlers import Result
from commands.models import Command
from infra.eventstore import EventStore

HANDLERS: dict[type[Command], Callable[[EventStore, Any], Result]] = {
    **handlers.HANDLERS,
    **identity.HANDLERS,
    **callbacks.HANDLERS,
    **credentials.HANDLERS,
    **variables.HANDLERS,
}
