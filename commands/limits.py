"""The limits a command applies (`domain.limits.Limits`), from the process settings.

`gateways.bootstrap` sets `store.limits = limits_from(settings)` on the event store a process's
command handlers share; handlers read them with `limits_of(store)`, which falls back to the
defaults for a store built without (tests, tools). Imported by `commands/` and the wiring.
"""

from __future__ import annotations

from typing import Any

from domain.limits import DEFAULT_LIMITS, Limits
from infra.settings import Settings

__all__ = ["limits_from", "limits_of"]


def limits_from(settings: Settings) -> Limits:
    """The settings' `max_*` limits as the domain's `Limits`."""
    return Limits(
        max_nodes=settings.max_nodes,
        max_json_depth=settings.max_json_depth,
        max_output_bytes=settings.max_output_bytes,
        max_expression_cost=settings.max_expression_cost,
        max_expression_result_bytes=settings.max_expression_result_bytes,
        max_variables_bytes=settings.max_variables_bytes,
    )


def limits_of(store: Any) -> Limits:
    """The limits set on this event store by the wiring, else the defaults."""
    limits: Limits = getattr(store, "limits", DEFAULT_LIMITS)
    return limits
