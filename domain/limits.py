"""How much one workflow, request or node may make LinkFlow hold or compute: the `Limits` the
command handlers and the Execution apply (their values come from `infra.settings`, see
`commands.limits.limits_from`; the defaults here equal the settings' defaults).

Pure (stdlib only). Imported by the domain, commands, the engine and the gateways.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

__all__ = ["DEFAULT_LIMITS", "Limits"]


@dataclass(frozen=True)
class Limits:
    """Each limit, and what crossing it is called (docs/architecture.md, "Limits")."""

    # Nodes per workflow definition: one Problem at `nodes`.
    max_nodes: int = 2_000
    # Nesting of request bodies and of parsed http_request responses: `too_deep`,
    # `response_too_deep`.
    max_json_depth: int = 64
    # A node's output as compact JSON: the node fails with `output_too_large`.
    max_output_bytes: int = 1024 * 1024
    # Work one `{{ }}` string may spend: `expression_too_costly`.
    max_expression_cost: int = 100_000
    # What one `{{ }}` evaluation (or interpolated string) may produce: `expression_too_large`.
    max_expression_result_bytes: int = 1024 * 1024
    # A workspace's variables together, as compact JSON: 422 `too_large`.
    max_variables_bytes: int = 256 * 1024
    # Not a limit, but process configuration handed to the Execution the same way: how
    # `{{ execution.signal_url.<name> }}` is made, `(workspace_id, execution_id, name,
    # started_at) -> url` (infra.signal_urls; None: the expression is null).
    signal_urls: Callable[[str, str, str, datetime], str] | None = field(
        default=None, compare=False
    )


DEFAULT_LIMITS = Limits()
