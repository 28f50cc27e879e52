"""Nodes that wait for the outside world: `wait_for_signal` and `approval`.

Their configs and branches (checked by `domain.definition`), the validation of signal names and
payloads, the outputs they complete with, and the order in which a signal is delivered to the
nodes waiting for it. The `Execution` aggregate (domain.execution) records the events and keeps
the state; this module only holds pure helpers. Imported by `domain.definition`,
`domain.execution` and `commands.signals`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from domain.base import DomainError
from domain.json_limits import json_size, too_deep
from domain.limits import Limits

SIGNAL_NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,127}$"
SIGNAL_NAME = re.compile(SIGNAL_NAME_PATTERN)
WAIT_FOR_SIGNAL = "wait_for_signal"
APPROVAL = "approval"
WAIT_TYPES: frozenset[str] = frozenset({WAIT_FOR_SIGNAL, APPROVAL})
TIMEOUT_BRANCH = "timeout"
# The branches each waiting node type completes with (its output's `branch`).
WAIT_BRANCHES: dict[str, frozenset[str]] = {
    WAIT_FOR_SIGNAL: frozenset({"received", TIMEOUT_BRANCH}),
    APPROVAL: frozenset({"approved", "rejected", TIMEOUT_BRANCH}),
}
DECISION_BRANCH = {"approve": "approved", "reject": "rejected"}
MAX_COMMENT_LENGTH = 4000
# Signals an execution keeps for nodes that have not asked for them yet (rule 9: bounded); past
# it, a signal is refused with 409 `too_many_signals`.
MAX_KEPT_SIGNALS = 1000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WaitForSignalConfig(_Strict):
    """`{signal, timeout_s?}`: the signal's name is literal (no expression), so that a signal
    can be matched to the nodes waiting for it without evaluating anything."""

    signal: str = Field(pattern=SIGNAL_NAME_PATTERN)
    timeout_s: float | None = Field(default=None, gt=0, le=366 * 86400)


class Approvers(_Strict):
    roles: list[Literal["owner", "admin", "member", "viewer"]] = Field(min_length=1)


class ApprovalConfig(_Strict):
    """`{approvers: {roles}, timeout_s?, allow_self_approval}`."""

    approvers: Approvers
    timeout_s: float | None = Field(default=None, gt=0, le=366 * 86400)
    allow_self_approval: bool = False


def check_signal_name(name: str) -> str:
    """`name` if it is a valid signal name, else a DomainError `invalid_signal_name`."""
    if not SIGNAL_NAME.fullmatch(name):
        raise DomainError(
            f"a signal name matches {SIGNAL_NAME_PATTERN} (1-128 characters)",
            "invalid_signal_name",
        )
    return name


def check_payload(payload: Any, limits: Limits) -> None:
    """A signal's payload becomes a node's output: it is bounded like one (size and depth)."""
    if json_size(payload, limits.max_output_bytes) > limits.max_output_bytes:
        raise DomainError(
            f"the payload exceeds {limits.max_output_bytes} bytes", "payload_too_large"
        )
    if too_deep(payload, limits.max_json_depth) is not None:
        raise DomainError(
            f"the payload is nested deeper than {limits.max_json_depth} levels", "too_deep"
        )


def signal_output(signal: dict[str, Any]) -> dict[str, Any]:
    """The output of a `wait_for_signal` node that received `signal` (a `SignalReceived`'s
    fields as kept by the aggregate)."""
    return {
        "branch": "received",
        "signal": signal["name"],
        "payload": signal["payload"],
        "actor": signal["actor"],
        "received_at": signal["received_at"],
    }


def approval_output(
    decision: str, comment: str | None, actor: dict[str, Any], decided_at: str
) -> dict[str, Any]:
    return {
        "branch": DECISION_BRANCH[decision],
        "decision": decision,
        "comment": comment,
        "actor": actor,
        "decided_at": decided_at,
    }


def timeout_output(node_type: str, config: dict[str, Any]) -> dict[str, Any]:
    """The output of a waiting node whose wait ran out and that has a `timeout` out-edge."""
    if node_type == WAIT_FOR_SIGNAL:
        return {
            "branch": TIMEOUT_BRANCH,
            "signal": config.get("signal"),
            "payload": None,
            "actor": None,
            "received_at": None,
        }
    return {
        "branch": TIMEOUT_BRANCH,
        "decision": None,
        "comment": None,
        "actor": None,
        "decided_at": None,
    }


class SignalUrlMap(dict[str, Any]):
    """`execution.signal_url` in expressions: the signal URL of any valid name, made on demand
    (JMESPath reads a field with `get`); empty as a whole, so that listing it makes nothing."""

    def __init__(self, make: Callable[[str], str]) -> None:
        super().__init__()
        self._make = make

    def get(self, key: Any, default: Any = None) -> Any:  # type: ignore[override]
        if isinstance(key, str) and SIGNAL_NAME.fullmatch(key):
            return self._make(key)
        return default


def signal_url_map(
    make: Callable[[str, str, str, datetime], str] | None,
    workspace_id: str,
    execution_id: str,
    started_at: datetime,
) -> SignalUrlMap | None:
    if make is None:
        return None
    return SignalUrlMap(lambda name: make(workspace_id, execution_id, name, started_at))
