"""The limits a command applies (`domain.limits.Limits`), from the process settings.

`gateways.bootstrap` gives `limits_from(settings)` to the process's `CommandBus`, which hands
them to each command in its `CommandContext` (`ctx.limits`; the defaults for a bus built
without, as in tests and tools). Imported by the wiring.
"""

from __future__ import annotations

from domain.limits import Limits
from infra.settings import Settings
from infra.signal_urls import SignalUrls

__all__ = ["limits_from"]


def limits_from(settings: Settings) -> Limits:
    """The settings' `max_*` limits as the domain's `Limits`."""
    return Limits(
        max_nodes=settings.max_nodes,
        max_json_depth=settings.max_json_depth,
        max_output_bytes=settings.max_output_bytes,
        max_expression_cost=settings.max_expression_cost,
        max_expression_result_bytes=settings.max_expression_result_bytes,
        max_variables_bytes=settings.max_variables_bytes,
        signal_urls=SignalUrls(settings.secret_key, settings.public_url, settings.signal_url_ttl_s),
    )
