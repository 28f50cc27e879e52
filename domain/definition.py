"""The workflow-definition model (nodes, edges, trigger, settings) and its DAG validation.

Domain: pure (no I/O, no clock, no asyncio). Imported by domain aggregates, commands, engine
and gateways. Untrusted input goes through :func:`parse_definition`, which normalises the
LinkFlow export format, validates everything and reports every problem at once;
``WorkflowDefinition.model_validate`` alone is for definitions that were validated before
(e.g. read back from events) and does not check node configs or the graph.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from domain.concurrency import ConcurrencySettings
from domain.export_format import is_export_format, normalise_export
from domain.expressions import (
    credential_paths,
    expression_errors,
    has_expression,
    references,
    string_paths,
)
from domain.node_logic import (
    CONDITION_OPERATORS,
    DEFAULT_BRANCH,
    MAX_REGEX_LENGTH,
    split_path,
)
from domain.search_attributes import SearchAttributeError, check_templates
from domain.waits import (
    APPROVAL,
    WAIT_BRANCHES,
    WAIT_FOR_SIGNAL,
    WAIT_TYPES,
    ApprovalConfig,
    WaitForSignalConfig,
)

__all__ = [
    "NODE_ID_PATTERN",
    "NODE_TYPES",
    "ConditionConfig",
    "ConditionItem",
    "DefinitionInvalid",
    "DelayConfig",
    "Edge",
    "HttpRequestConfig",
    "Node",
    "Problem",
    "RetryPolicy",
    "Settings",
    "TransformConfig",
    "Trigger",
    "WORKER_NODE_TYPES",
    "WebhookAuth",
    "WorkflowDefinition",
    "branches_of",
    "parse_definition",
]

NODE_ID_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
QUEUE_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
NODE_TYPES: frozenset[str] = frozenset(
    {"http_request", "condition", "transform", "delay", *WAIT_TYPES}
)
# Nodes a worker runs (the others are decided inline by the Execution): only these may read
# credentials, which are opened in the worker alone.
WORKER_NODE_TYPES: frozenset[str] = frozenset({"http_request"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------- the definition


class RetryPolicy(_Strict):
    """How often a node is attempted and how long to wait between attempts."""

    max_attempts: int = Field(default=1, ge=1, le=100)
    initial_interval_s: float = Field(default=1.0, gt=0)
    backoff: float = Field(default=2.0, ge=1)
    max_interval_s: float = Field(default=3600.0, gt=0)

    def delay_before(self, attempt: int) -> float:
        """Seconds to wait after failed attempt `attempt` (1-based) before attempt + 1:
        min(initial_interval_s * backoff ** (attempt - 1), max_interval_s)."""
        if attempt < 1:
            raise ValueError("attempts are numbered from 1")
        try:
            delay = self.initial_interval_s * self.backoff ** (attempt - 1)
        except OverflowError:
            delay = math.inf
        return min(delay, self.max_interval_s)


class Node(_Strict):
    """One step of a workflow. ``config`` may contain ``{{ }}`` expressions."""

    id: str = Field(pattern=NODE_ID_PATTERN)
    type: str
    name: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    retry: RetryPolicy | None = None
    # Start-to-close: how long one attempt may run once a worker has started it.
    timeout_s: float | None = Field(default=None, gt=0)
    # Schedule-to-start: how long an attempt may wait for a worker (None: as long as it takes).
    schedule_to_start_s: float | None = Field(default=None, gt=0)
    on_error: Literal["stop", "continue"] = "stop"
    queue: str = Field(default="default", pattern=QUEUE_PATTERN)

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in NODE_TYPES:
            raise ValueError(
                f"unknown node type {value!r}; expected one of: {', '.join(sorted(NODE_TYPES))}"
            )
        return value


class Edge(_Strict):
    """``source`` runs before ``target``; ``branch`` (condition, wait_for_signal and approval
    sources only) gates it."""

    source: str
    target: str
    branch: str | None = None


WEBHOOK_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


class WebhookAuth(_Strict):
    """How a webhook caller proves itself. The secret lives in the workspace credential named by
    ``credential`` (never in the definition, which is stored in events): ``header`` compares the
    header ``name`` with the credential's ``secret``; ``bearer`` compares the Bearer token with
    it; ``basic`` checks its ``username`` and ``password``; ``hmac`` checks the LinkFlow
    signature headers made with its ``secret``."""

    type: Literal["header", "basic", "bearer", "hmac"]
    credential: str = Field(min_length=1, max_length=100)
    name: str | None = Field(default=None, min_length=1, max_length=100)

    @model_validator(mode="after")
    def _header_named(self) -> WebhookAuth:
        if self.type == "header" and not self.name:
            raise ValueError("header auth needs the header's name")
        return self


class Trigger(_Strict):
    """What starts an execution: ``manual`` (the API), ``webhook`` (``methods``, optional
    ``auth``, ``respond``) or ``schedule`` (``cron``, ``timezone``, ``catch_up``)."""

    type: Literal["manual", "webhook", "schedule"] = "manual"
    # webhook
    methods: list[Literal["GET", "POST", "PUT", "PATCH", "DELETE"]] | None = None
    auth: WebhookAuth | None = None
    respond: Literal["immediately", "on_completion"] = "immediately"
    # schedule
    cron: str | None = None
    timezone: str = "UTC"
    # Due times missed while nothing ran: start the latest one once (default), each of them,
    # or none.
    catch_up: Literal["latest", "all", "none"] = "latest"

    @field_validator("methods")
    @classmethod
    def _methods_given(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("give at least one method, or leave methods out (POST)")
        return value

    @property
    def allowed_methods(self) -> list[str]:
        return list(self.methods or ["POST"])


class Settings(_Strict):
    timeout_s: float | None = Field(default=None, gt=0)
    # Where the final result is POSTed (signed) when the execution does not name its own.
    callback_url: str | None = Field(default=None, max_length=2048, pattern=r"^https?://\S+$")
    # Search attributes set at each start: {name: "{{ expression }}"} (domain.search_attributes).
    search_attributes: dict[str, Any] | None = None
    # The workflow started (trigger `error_workflow`) when an execution of this one fails
    # (engine.error_workflows); checked to exist in the workspace when the definition is saved.
    error_workflow_id: UUID | None = None
    # At most `limit` executions at once, per rendered `key` (domain.concurrency).
    concurrency: ConcurrencySettings | None = None
    # The order of this workflow's tasks among a workspace's waiting tasks: 1 first, None is 3.
    priority: int | None = Field(default=None, ge=1, le=5)

    @field_validator("search_attributes")
    @classmethod
    def _templates(cls, value: dict[str, Any] | None) -> dict[str, str] | None:
        if value is None:
            return None
        try:
            return check_templates(value)
        except SearchAttributeError as exc:
            raise ValueError(str(exc)) from None


@dataclass(frozen=True)
class _GraphIndex:
    nodes: dict[str, Node]
    order: dict[str, int]
    incoming: dict[str, list[Edge]]
    children: dict[str, list[str]]

    @classmethod
    def of(cls, nodes: list[Node], edges: list[Edge]) -> _GraphIndex:
        incoming: dict[str, list[Edge]] = {}
        targets: dict[str, dict[str, None]] = {}
        for edge in edges:
            incoming.setdefault(edge.target, []).append(edge)
            targets.setdefault(edge.source, {})[edge.target] = None
        children = {source: list(ends) for source, ends in targets.items()}
        order = {node.id: i for i, node in enumerate(nodes)}
        return cls({node.id: node for node in nodes}, order, incoming, children)


class WorkflowDefinition(BaseModel):
    """A workflow definition (the API format). Unknown top-level fields are ignored."""

    model_config = ConfigDict(extra="ignore")
    _graph: _GraphIndex | None = PrivateAttr(default=None)

    name: str = Field(min_length=1, max_length=200)
    description: str | None = None
    trigger: Trigger = Field(default_factory=Trigger)
    nodes: list[Node] = Field(min_length=1)
    edges: list[Edge] = Field(default_factory=list)
    settings: Settings = Field(default_factory=Settings)

    def node(self, node_id: str) -> Node:
        """The node with this id; KeyError if there is none."""
        return self._index().nodes[node_id]

    def incoming(self, node_id: str) -> list[Edge]:
        """Edges whose target is `node_id`, in definition order."""
        return self._index().incoming.get(node_id, [])

    def position(self, node_id: str) -> int:
        """Where the node stands in the definition's `nodes` (0-based)."""
        return self._index().order[node_id]

    def children(self, node_id: str) -> list[str]:
        """Ids of the targets of `node_id`'s edges, in definition order (no repeats)."""
        return self._index().children.get(node_id, [])

    def leaves(self) -> list[str]:
        """Ids of the nodes without an outgoing edge, in definition order."""
        children = self._index().children
        return [node.id for node in self.nodes if node.id not in children]

    def _index(self) -> _GraphIndex:
        """Nodes by id and edges by end, built once (the definition never changes once
        validated): an execution's decisions then cost O(edges) in all, not O(nodes × edges)."""
        if self._graph is None:
            self._graph = _GraphIndex.of(self.nodes, self.edges)
        return self._graph

    def to_json(self) -> dict[str, Any]:
        """The definition as JSON-ready data (None-valued fields and the trigger's defaults left
        out; config untouched)."""
        data = self.model_dump(mode="json", exclude_none=True)
        data["trigger"] = {"type": self.trigger.type} | self.trigger.model_dump(
            mode="json", exclude_none=True, exclude_defaults=True
        )
        return data


# --------------------------------------------------------------------------- node configs


class HttpRequestConfig(_Strict):
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"] = "GET"
    url: str = Field(min_length=1)
    headers: dict[str, str] = Field(default_factory=dict)
    query: dict[str, Any] = Field(default_factory=dict)
    body: Any = None
    fail_on_status: bool = True


class ConditionItem(_Strict):
    value: Any
    operator: str
    operand: Any = None
    branch: str = Field(min_length=1)

    @field_validator("operator")
    @classmethod
    def _known_operator(cls, value: str) -> str:
        if value not in CONDITION_OPERATORS:
            raise ValueError(
                f"unknown operator {value!r}; expected one of: "
                + ", ".join(sorted(CONDITION_OPERATORS))
            )
        return value

    @field_validator("operand")
    @classmethod
    def _regex_operand(cls, value: Any, info: ValidationInfo) -> Any:
        if info.data.get("operator") != "regex" or has_expression(value):
            return value
        if not isinstance(value, str):
            raise ValueError("the regex operator needs a pattern string as operand")
        if len(value) > MAX_REGEX_LENGTH:
            raise ValueError(f"regex longer than {MAX_REGEX_LENGTH} characters")
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"invalid regex: {exc}") from exc
        return value


class ConditionConfig(_Strict):
    conditions: list[ConditionItem] = Field(min_length=1)
    default: str = Field(default=DEFAULT_BRANCH, min_length=1)


def _check_paths(paths: Iterable[str]) -> None:
    for path in paths:
        split_path(path)  # NodeConfigError is a ValueError: pydantic reports it


class TransformConfig(_Strict):
    input: Any = None
    set: dict[str, Any] = Field(default_factory=dict)
    remove: list[str] = Field(default_factory=list)
    pick: list[str] = Field(default_factory=list)

    @field_validator("input")
    @classmethod
    def _object_input(cls, value: Any) -> Any:
        if value is None or isinstance(value, dict) or has_expression(value):
            return value
        raise ValueError("input must be an object or a {{ }} expression")

    @field_validator("remove", "pick")
    @classmethod
    def _dotted_paths(cls, value: list[str]) -> list[str]:
        _check_paths(value)
        return value

    @field_validator("set")
    @classmethod
    def _dotted_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        _check_paths(value)
        return value

    @model_validator(mode="after")
    def _something_to_do(self) -> TransformConfig:
        if not (self.set or self.remove or self.pick):
            raise ValueError("a transform needs at least one of set, remove or pick")
        return self


class DelayConfig(_Strict):
    seconds: Any

    @field_validator("seconds")
    @classmethod
    def _seconds(cls, value: Any) -> Any:
        if has_expression(value):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            if math.isfinite(value) and value >= 0:
                return value
        raise ValueError("seconds must be a number >= 0 or a {{ }} expression")


CONFIG_MODELS: dict[str, type[BaseModel]] = {
    "http_request": HttpRequestConfig,
    "condition": ConditionConfig,
    "transform": TransformConfig,
    "delay": DelayConfig,
    WAIT_FOR_SIGNAL: WaitForSignalConfig,
    APPROVAL: ApprovalConfig,
}


def _config_branches(config: Any) -> set[str] | None:
    """The branches a condition config can produce, or None if it is too malformed to say."""
    if not isinstance(config, Mapping) or not isinstance(config.get("conditions"), list):
        return None
    branches = {
        c["branch"]
        for c in config["conditions"]
        if isinstance(c, Mapping) and isinstance(c.get("branch"), str)
    }
    default = config.get("default", DEFAULT_BRANCH)
    branches.add(default if isinstance(default, str) else DEFAULT_BRANCH)
    return branches


def branches_of(node: Node) -> set[str]:
    """The branches a condition node can take (each condition's and the default), or a waiting
    node's (domain.waits); empty for other node types."""
    if node.type in WAIT_BRANCHES:
        return set(WAIT_BRANCHES[node.type])
    if node.type != "condition":
        return set()
    return _config_branches(node.config) or set()


# --------------------------------------------------------------------------- problems


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a definition; ``path`` like ``nodes[2].config.url`` ("" = root)."""

    path: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"path": self.path, "message": self.message}


class DefinitionInvalid(ValueError):
    """A workflow definition with problems; ``problems`` lists all of them."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        summary = "; ".join(f"{p.path or '<root>'}: {p.message}" for p in self.problems)
        super().__init__(f"invalid workflow definition: {summary}")


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _sub(prefix: str, sub_path: str) -> str:
    if not sub_path:
        return prefix
    if sub_path.startswith("[") or not prefix:
        return prefix + sub_path
    return f"{prefix}.{sub_path}"


_PREFIXES = ("Value error, ", "Assertion failed, ")
_NO_NODES = "a workflow needs at least one node"
_MAX_CYCLE_SHOWN = 12
# Nodes and edges the cycle searches of one definition may expand (about 0.1 s).
_CYCLE_SEARCH_STEPS = 200_000


def _pydantic_problems(error: ValidationError, prefix: str = "") -> list[Problem]:
    problems = []
    for detail in error.errors(include_url=False):
        path = prefix
        for part in detail["loc"]:
            path = _join(path, part)
        kind = detail["type"]
        message = detail["msg"]
        for noise in _PREFIXES:
            message = message.removeprefix(noise)
        if kind == "extra_forbidden":
            message = "unknown field"
        elif kind == "missing":
            message = "required"
        if not prefix and detail["loc"] == ("nodes",) and kind in ("missing", "too_short"):
            message = _NO_NODES
        problems.append(Problem(path, message))
    return problems


# --------------------------------------------------------------------------- parsing


def _items(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _node_problems(nodes: list[Any]) -> tuple[list[Problem], dict[str, int]]:
    """Duplicate ids, configs per type and expressions; also returns id -> first index."""
    problems: list[Problem] = []
    first: dict[str, int] = {}
    for i, node in enumerate(nodes):
        if not isinstance(node, Mapping):
            continue
        node_id = node.get("id")
        if isinstance(node_id, str):
            if node_id in first:
                problems.append(
                    Problem(
                        f"nodes[{i}].id",
                        f"duplicate node id {node_id!r} (also nodes[{first[node_id]}])",
                    )
                )
            else:
                first[node_id] = i
        config = node.get("config", {})
        if not isinstance(config, Mapping):
            continue  # reported by the model
        node_type = node.get("type")
        model = CONFIG_MODELS.get(node_type) if isinstance(node_type, str) else None
        if model is not None:
            try:
                model.model_validate(dict(config))
            except ValidationError as exc:
                problems.extend(_pydantic_problems(exc, f"nodes[{i}].config"))
        for sub_path, message in expression_errors(config):
            problems.append(Problem(_sub(f"nodes[{i}].config", sub_path), message))
        if node_type in NODE_TYPES and node_type not in WORKER_NODE_TYPES:
            for sub_path in credential_paths(config):
                message = f"credentials are only available to {', '.join(WORKER_NODE_TYPES)} nodes"
                problems.append(Problem(_sub(f"nodes[{i}].config", sub_path), message))
    return problems, first


def _reference_problems(nodes: list[Any], ids: Mapping[str, int]) -> list[Problem]:
    problems = []
    known = set(ids)
    for i, node in enumerate(nodes):
        if not isinstance(node, Mapping) or not isinstance(node.get("config"), Mapping):
            continue
        for sub_path, text in string_paths(node["config"]):
            for ref in sorted(references(text) - known):
                problems.append(
                    Problem(
                        _sub(f"nodes[{i}].config", sub_path),
                        f"expression refers to unknown node {ref!r}",
                    )
                )
    return problems


class _Steps:
    """What is left of the work `_cycle_problems` may spend searching for paths."""

    __slots__ = ("left",)

    def __init__(self, left: int) -> None:
        self.left = left


class _OutOfSteps(Exception):
    """Internal: the path searches of `_cycle_problems` used up their steps."""


def _find_path(
    children: Mapping[str, list[str]], start: str, goal: str, steps: _Steps
) -> list[str] | None:
    """A path start -> … -> goal through `children`, or None; each node expanded costs a
    step (`_OutOfSteps` when none are left)."""
    parents: dict[str, str | None] = {start: None}
    stack = [start]
    while stack:
        current = stack.pop()
        if current == goal:
            path = [current]
            while (parent := parents[path[-1]]) is not None:
                path.append(parent)
            return path[::-1]
        below = children.get(current, [])
        steps.left -= 1 + len(below)
        if steps.left < 0:
            raise _OutOfSteps
        for child in below:
            if child not in parents:
                parents[child] = current
                stack.append(child)
    return None


def _edge_problems(edges: list[Any], nodes: list[Any], ids: Mapping[str, int]) -> list[Problem]:
    problems: list[Problem] = []
    seen: dict[tuple[str, str, str | None], int] = {}
    candidates: list[tuple[int, str, str]] = []  # known, distinct, not self-loops
    produced_by: dict[str, set[str] | None] = {}  # a condition's branches, computed once
    for j, edge in enumerate(edges):
        if not isinstance(edge, Mapping):
            continue
        source, target, branch = edge.get("source"), edge.get("target"), edge.get("branch")
        known = True
        for field, node_id in (("source", source), ("target", target)):
            if not isinstance(node_id, str):
                known = False  # reported by the model
            elif node_id not in ids:
                known = False
                problems.append(Problem(f"edges[{j}].{field}", f"unknown node {node_id!r}"))

        if branch is not None and isinstance(source, str) and source in ids:
            source_node = nodes[ids[source]]
            waits = WAIT_BRANCHES.get(source_node.get("type"))  # type: ignore[arg-type]
            if waits is not None:
                if isinstance(branch, str) and branch not in waits:
                    problems.append(
                        Problem(
                            f"edges[{j}].branch",
                            f"{source_node.get('type')} {source!r} never takes branch "
                            f"{branch!r} (its branches: {', '.join(sorted(waits))})",
                        )
                    )
            elif source_node.get("type") != "condition":
                problems.append(
                    Problem(
                        f"edges[{j}].branch",
                        f"only edges leaving a condition, wait_for_signal or approval node "
                        f"can have a branch; "
                        f"{source!r} is a {source_node.get('type')!r} node",
                    )
                )
            elif isinstance(branch, str):
                if source not in produced_by:
                    produced_by[source] = _config_branches(source_node.get("config"))
                produced = produced_by[source]
                if produced is not None and branch not in produced:
                    problems.append(
                        Problem(
                            f"edges[{j}].branch",
                            f"condition {source!r} never takes branch {branch!r} "
                            f"(its branches: {', '.join(sorted(produced))})",
                        )
                    )

        if not known or not isinstance(source, str) or not isinstance(target, str):
            continue
        key = (source, target, branch if isinstance(branch, str) else None)
        if key in seen:
            problems.append(
                Problem(
                    f"edges[{j}]",
                    f"duplicate edge {source} -> {target} (same as edges[{seen[key]}])",
                )
            )
            continue
        seen[key] = j
        if source == target:
            problems.append(
                Problem(
                    f"edges[{j}]",
                    f"edge from {source!r} to itself makes a cycle: {source} -> {source}",
                )
            )
            continue
        candidates.append((j, source, target))
    problems.extend(_cycle_problems(candidates))
    return problems


def _is_acyclic(edges: list[tuple[int, str, str]]) -> bool:
    """Kahn's algorithm over the edges' nodes."""
    children: dict[str, list[str]] = {}
    indegree: dict[str, int] = {}
    for _, source, target in edges:
        children.setdefault(source, []).append(target)
        indegree.setdefault(source, 0)
        indegree[target] = indegree.get(target, 0) + 1
    ready = [node for node, degree in indegree.items() if degree == 0]
    visited = 0
    while ready:
        node = ready.pop()
        visited += 1
        for child in children.get(node, []):
            indegree[child] -= 1
            if indegree[child] == 0:
                ready.append(child)
    return visited == len(indegree)


def _describe_cycle(nodes: list[str]) -> str:
    if len(nodes) > _MAX_CYCLE_SHOWN:
        shown = nodes[: _MAX_CYCLE_SHOWN - 1]
        return " -> ".join([*shown, f"… ({len(nodes) - 1} nodes)", nodes[-1]])
    return " -> ".join(nodes)


def _strongly_connected(edges: list[tuple[int, str, str]]) -> dict[str, int]:
    """Each node's strongly connected component (an id), by Tarjan's algorithm without
    recursion."""
    children: dict[str, list[str]] = {}
    for _, source, target in edges:
        children.setdefault(source, []).append(target)
        children.setdefault(target, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    component: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    for root in children:
        if root in index:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, next_child = work.pop()
            if next_child == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            below = children[node]
            if next_child > 0:  # back from below[next_child - 1]
                low[node] = min(low[node], low[below[next_child - 1]])
            while next_child < len(below):
                child = below[next_child]
                next_child += 1
                if child not in index:
                    work.append((node, next_child))
                    work.append((child, 0))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                if low[node] == index[node]:
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component[member] = index[node]
                        if member == node:
                            break
    return component


def _cycle_problems(edges: list[tuple[int, str, str]]) -> list[Problem]:
    """One problem per edge that, added in definition order, closes a cycle (then left out).

    Only an edge inside a strongly connected component can close one, so only those are
    searched; the searches together expand at most `_CYCLE_SEARCH_STEPS` nodes and edges (a
    definition whose edges close cycles everywhere is not searched for ever): past that, one
    problem at `edges` says more edges close cycles."""
    if _is_acyclic(edges):
        return []
    component = _strongly_connected(edges)
    problems = []
    children: dict[str, list[str]] = {}
    steps = _Steps(_CYCLE_SEARCH_STEPS)
    for j, source, target in edges:
        if component[source] == component[target]:
            try:
                back = _find_path(children, target, source, steps)
            except _OutOfSteps:
                problems.append(
                    Problem(
                        "edges",
                        f"edges[{j}] and later edges may close more cycles (not searched:"
                        " too many)",
                    )
                )
                break
            if back is not None:
                cycle = _describe_cycle([source, *back])
                problems.append(Problem(f"edges[{j}]", f"edge closes a cycle: {cycle}"))
                continue
        children.setdefault(source, []).append(target)
    return problems


def _trigger_problems(trigger: Any) -> list[Problem]:
    if not isinstance(trigger, Mapping):
        return []
    if isinstance(trigger.get("auth"), Mapping) and "secret" in trigger["auth"]:
        return [
            Problem(
                "trigger.auth.secret",
                "a definition is stored as events: put the secret in a workspace credential "
                "and name it in auth.credential",
            )
        ]
    if trigger.get("type") != "schedule":
        return []
    cron, zone = trigger.get("cron"), trigger.get("timezone", "UTC")
    if not isinstance(cron, str) or not cron.strip():
        return [Problem("trigger.cron", "a schedule trigger needs a cron expression")]
    problems = []
    if not croniter.is_valid(cron):
        problems.append(Problem("trigger.cron", f"{cron!r} is not a valid cron expression"))
    if not isinstance(zone, str) or not _known_zone(zone):
        problems.append(Problem("trigger.timezone", f"{zone!r} is not a known IANA time zone"))
    return problems


def _known_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _dedupe(problems: list[Problem]) -> list[Problem]:
    return list(dict.fromkeys(problems))


def parse_definition(raw: Any, max_nodes: int = 2000) -> WorkflowDefinition:
    """Validate an untrusted definition (API or LinkFlow export format) and return the model.

    Raises DefinitionInvalid listing every problem found: field errors, unknown node types,
    node configs, duplicate ids, unknown edge ends, cycles, branches, duplicate edges, bad
    expressions and expressions naming unknown nodes. A definition of more than `max_nodes`
    nodes is refused with that one problem (at `nodes`), before anything else is checked.
    """
    if not isinstance(raw, Mapping):
        raise DefinitionInvalid([Problem("", "a workflow definition must be a JSON object")])
    count = len(raw["nodes"]) if isinstance(raw.get("nodes"), list | tuple) else 0
    if count > max_nodes:
        message = f"a workflow has at most {max_nodes} nodes; this one has {count}"
        raise DefinitionInvalid([Problem("nodes", message)])
    data = normalise_export(raw) if is_export_format(raw) else dict(raw)

    problems: list[Problem] = []
    model: WorkflowDefinition | None = None
    try:
        model = WorkflowDefinition.model_validate(data)
    except ValidationError as exc:
        problems.extend(_pydantic_problems(exc))

    nodes = _items(data.get("nodes"))
    node_problems, ids = _node_problems(nodes)
    problems.extend(node_problems)
    problems.extend(_reference_problems(nodes, ids))
    problems.extend(_edge_problems(_items(data.get("edges")), nodes, ids))
    trigger_problems = _trigger_problems(data.get("trigger"))
    explained = {problem.path for problem in trigger_problems}  # say why, not "unknown field"
    problems = [p for p in problems if p.path not in explained] + trigger_problems

    if problems or model is None:
        raise DefinitionInvalid(_dedupe(problems) or [Problem("", "invalid definition")])
    return model
