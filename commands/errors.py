"""What a command can refuse with, for the edges that map refusals to answers (the gateway):
the domain's refusal and invalid-definition errors, an unknown or foreign id, a role that may
not make a member change, lasting conflicts, an event larger than the event store takes."""

from __future__ import annotations

from commands.bus import CommandConflict
from commands.handlers import NotFound
from commands.identity import Forbidden
from domain.base import DomainError
from domain.definition import DefinitionInvalid
from infra.recorder import EventTooLarge

__all__ = [
    "CommandConflict",
    "DefinitionInvalid",
    "DomainError",
    "EventTooLarge",
    "Forbidden",
    "NotFound",
]
