"""Every command type and its handler, gathered from the handler modules of `commands/`.
Imported by `commands.bus` only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from commands import callbacks, credentials, handlers, identity, reruns, signals, variables
from commands.context import CommandContext
from commands.handlers import Result
from commands.models import Command

HANDLERS: dict[type[Command], Callable[[CommandContext, Any], Result]] = {
    **handlers.HANDLERS,
    **identity.HANDLERS,
    **callbacks.HANDLERS,
    **credentials.HANDLERS,
    **variables.HANDLERS,
    **signals.HANDLERS,
    **reruns.HANDLERS,
}
