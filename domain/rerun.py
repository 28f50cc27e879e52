"""Re-runs: which nodes of a new execution keep the outputs an earlier one recorded.

A re-run from a node keeps the outputs of that node's ancestors in the DAG (the nodes upstream of
it) and runs every other node again. `rerun_plan` decides it from the original's node runs and
the definition the re-run uses (the original's version or the workflow's latest); it refuses a
`from_node` that is not a node of that definition, or an ancestor whose output the original does
not have. A bulk re-run with an Idempotency-Key is recorded as a `BulkRerun` aggregate (its id
derived from the workspace and the key) naming the executions it re-ran and their re-runs, so
that a repeat answers the same ids. Pure: imported by `domain.execution` and `commands.reruns`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.base import TenantAggregate
from domain.definition import WorkflowDefinition
from domain.statuses import NodeStatus

_NAMESPACE = uuid5(NAMESPACE_URL, "https://linkflow.dev/reruns")
# At most this many executions are re-run by one bulk request.
MAX_BULK_RERUN = 1000


class RerunRefused(ValueError):
    """The re-run cannot be made as asked: `path` names the request's field, `message` why."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


@dataclass(frozen=True)
class RerunPlan:
    """What a re-run keeps: `reused` node id → the original's output (recorded as
    `NodeReused`), and `skipped` ancestors the original skipped (recorded as `NodeSkipped`), both
    in definition order."""

    reused: dict[str, Any] = field(default_factory=dict)
    skipped: tuple[str, ...] = ()


def ancestors(graph: WorkflowDefinition, node_id: str) -> list[str]:
    """Every node from which `node_id` is reachable, in definition order (without it)."""
    seen: set[str] = set()
    stack = [edge.source for edge in graph.incoming(node_id)]
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        stack.extend(edge.source for edge in graph.incoming(current))
    seen.discard(node_id)
    return sorted(seen, key=graph.position)


def rerun_plan(
    graph: WorkflowDefinition, from_node: str | None, original: Mapping[str, tuple[str, Any]]
) -> RerunPlan:
    """The plan of a re-run of `graph` from `from_node` (None: everything runs again), given the
    original's node runs as node id → (status, output). Refused (`RerunRefused`) when
    `from_node` is not a node of `graph`, or one of its ancestors did not complete (nor was
    skipped) in the original, or is not a node of the original."""
    if from_node is None:
        return RerunPlan()
    if from_node not in {node.id for node in graph.nodes}:
        raise RerunRefused("from_node", f"{from_node!r} is not a node of the chosen version")
    reused: dict[str, Any] = {}
    skipped: list[str] = []
    for node_id in ancestors(graph, from_node):
        status, output = original.get(node_id) or (None, None)
        if status == NodeStatus.COMPLETED:
            reused[node_id] = output
        elif status == NodeStatus.SKIPPED:
            skipped.append(node_id)
        else:
            why = "is not a node of the original" if status is None else f"ended {status}"
            raise RerunRefused(
                "from_node",
                f"upstream node {node_id!r} {why} in the original: it has no output to reuse",
            )
    return RerunPlan(reused, tuple(skipped))


def rerun_id(original_id: UUID, idempotency_key: str) -> UUID:
    """The re-run of `original_id` that a request with this Idempotency-Key makes (a repeat
    names the same execution)."""
    return uuid5(_NAMESPACE, f"rerun:{original_id}:{idempotency_key}")


class BulkRerun(TenantAggregate):
    """One bulk re-run request made with an Idempotency-Key: what it matched and started."""

    class BulkRerunRequested(Aggregate.Created):
        workspace_id: str
        q: str
        originals: list[str]
        reruns: list[str]
        skipped: list[dict[str, str]]

    def __init__(
        self,
        workspace_id: str,
        q: str,
        originals: list[str],
        reruns: list[str],
        skipped: list[dict[str, str]],
    ) -> None:
        self.workspace_id = workspace_id
        self.q = q
        self.originals = list(originals)
        self.reruns = list(reruns)
        self.skipped = list(skipped)

    @staticmethod
    def id_for(workspace_id: str, idempotency_key: str) -> UUID:
        return uuid5(_NAMESPACE, f"bulk:{workspace_id}:{idempotency_key}")

    @classmethod
    def request(
        cls,
        workspace_id: str,
        idempotency_key: str,
        q: str,
        originals: list[str],
        reruns: list[str],
        skipped: list[dict[str, str]],
        now: datetime,
    ) -> BulkRerun:
        return cls._create(
            cls.BulkRerunRequested,
            id=cls.id_for(workspace_id, idempotency_key),
            workspace_id=workspace_id,
            q=q,
            originals=originals,
            reruns=reruns,
            skipped=skipped,
            timestamp=now,
        )
