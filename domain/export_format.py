"""Translation of the LinkFlow export format into the API's workflow-definition format.

Domain: pure (no I/O, no clock, no asyncio). Imported by domain.definition (parse_definition
normalises exports before validating) and tests.

The export format has ``nodes[{id, type, position, data: {label, config, …}}]``,
``edges[{id, source, target, sourceHandle}]``, ``trigger_type`` and ``viewport``, and engine
type names (``action_http_request``, ``logic_condition``, ``logic_delay``, ``transform``).
Anything this module does not understand is passed through, so that validation reports it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

__all__ = ["ENGINE_TYPES", "DELAY_UNITS", "is_export_format", "normalise_export"]

ENGINE_TYPES: dict[str, str] = {
    "action_http_request": "http_request",
    "logic_condition": "condition",
    "logic_delay": "delay",
    "action_transform": "transform",
    "transform": "transform",
    "http_request": "http_request",
    "condition": "condition",
    "delay": "delay",
}

DELAY_UNITS: dict[str, int] = {
    "second": 1,
    "seconds": 1,
    "minute": 60,
    "minutes": 60,
    "hour": 3600,
    "hours": 3600,
    "day": 86400,
    "days": 86400,
}

# Node fields of the API format kept when found at the top of an exported node.
_NODE_FIELDS = ("id", "type", "name", "config", "retry", "timeout_s", "on_error", "queue")
# Node fields of the API format taken from an exported node's ``data``.
_DATA_FIELDS = ("retry", "timeout_s", "on_error", "queue")
_TOP_LEVEL_DROPPED = ("trigger_type", "trigger_config", "viewport")


def _items(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def is_export_format(raw: Mapping[str, Any]) -> bool:
    """True if `raw` looks like a LinkFlow export: a node with ``data``, a top-level
    ``trigger_type``, or an edge with ``sourceHandle``."""
    if not isinstance(raw, Mapping):
        return False
    if "trigger_type" in raw:
        return True
    if any(isinstance(n, Mapping) and "data" in n for n in _items(raw.get("nodes"))):
        return True
    return any(isinstance(e, Mapping) and "sourceHandle" in e for e in _items(raw.get("edges")))


def _template(field: Any) -> Any:
    if isinstance(field, str) and "{{" not in field:
        return "{{ " + field + " }}"
    return field


def _condition_config(config: dict[str, Any], handles: list[Any]) -> dict[str, Any]:
    if "mode" not in config and not any(
        isinstance(c, Mapping) and ("field" in c or "output" in c)
        for c in _items(config.get("conditions"))
    ):
        return config  # already in the API shape
    mode = config.get("mode", "if")
    conditions: list[Any] = []
    for index, condition in enumerate(_items(config.get("conditions"))):
        if not isinstance(condition, Mapping):
            conditions.append(condition)
            continue
        if "output" in condition and condition["output"] is not None:
            branch = condition["output"]
        else:
            branch = "true" if mode == "if" else str(index)
        converted: dict[str, Any] = {
            "value": _template(condition["field"])
            if "field" in condition
            else condition.get("value"),
            "operator": condition.get("operator"),
            "operand": condition.get("value") if "field" in condition else condition.get("operand"),
            "branch": branch,
        }
        conditions.append(converted)
    if "default" in config:
        default = config["default"]
    elif mode == "if" and "false" in handles and "else" not in handles:
        default = "false"
    else:
        default = "else"
    return {"conditions": conditions, "default": default}


def _delay_config(config: dict[str, Any]) -> dict[str, Any]:
    if "duration" not in config:
        return config
    duration = config["duration"]
    unit = config.get("unit") or "seconds"
    factor = DELAY_UNITS.get(unit) if isinstance(unit, str) else None
    if factor is None:
        return config  # unknown unit: validation reports the untranslated config
    if isinstance(duration, str) and "{{" not in duration:
        try:
            duration = float(duration) if "." in duration else int(duration)
        except ValueError:
            return config
    if isinstance(duration, bool):
        return config
    if isinstance(duration, int | float):
        return {"seconds": duration * factor}
    if isinstance(duration, str) and factor == 1:
        return {"seconds": duration}
    return config


def _transform_config(config: dict[str, Any]) -> dict[str, Any]:
    operation = config.get("operation")
    if operation is None:
        return config
    result: dict[str, Any] = {}
    if "input" in config:
        result["input"] = config["input"]
    if operation == "set":
        result["set"] = config.get("values", {})
    elif operation in ("remove", "pick"):
        result[operation] = config.get("fields", [])
    else:
        return config
    return result


def _node(raw: Any, handles: list[Any]) -> Any:
    if not isinstance(raw, Mapping):
        return copy.deepcopy(raw)
    node: dict[str, Any] = {k: copy.deepcopy(raw[k]) for k in _NODE_FIELDS if k in raw}
    data = raw.get("data")
    if isinstance(data, Mapping):
        if "label" in data and "name" not in node:
            node["name"] = data["label"]
        if "config" in data and "config" not in node:
            node["config"] = copy.deepcopy(data["config"])
        for key in _DATA_FIELDS:
            if key in data and key not in node:
                node[key] = copy.deepcopy(data[key])
    node_type = node.get("type")
    if isinstance(node_type, str) and node_type in ENGINE_TYPES:
        node["type"] = node_type = ENGINE_TYPES[node_type]
    config = node.get("config")
    if isinstance(config, dict):
        if node_type == "condition":
            node["config"] = _condition_config(config, handles)
        elif node_type == "delay":
            node["config"] = _delay_config(config)
        elif node_type == "transform":
            node["config"] = _transform_config(config)
    if node.get("name") is None:
        node.pop("name", None)
    return node


def _has_str_id(node: Any) -> bool:
    return isinstance(node, Mapping) and isinstance(node.get("id"), str)


def _edge(raw: Any, types: Mapping[Any, Any]) -> Any:
    if not isinstance(raw, Mapping):
        return copy.deepcopy(raw)
    edge: dict[str, Any] = {k: raw[k] for k in ("source", "target") if k in raw}
    branch = raw.get("branch", raw.get("sourceHandle"))
    source = raw.get("source")
    is_condition = isinstance(source, str) and types.get(source) == "condition"
    if branch is not None and (is_condition or "branch" in raw):
        edge["branch"] = branch
    return edge


def normalise_export(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The API-format definition equivalent to an exported one (`raw` is not modified).

    ``trigger_type`` (+ optional ``trigger_config`` object) -> ``trigger``; node engine types
    -> API types; ``data.label`` -> ``name``; ``data.config`` -> ``config`` (condition, delay
    and transform configs translated); ``data.retry/timeout_s/on_error/queue`` -> node fields;
    ``sourceHandle`` -> ``branch`` on edges leaving a condition. ``position``, ``viewport``,
    edge ids and other editor fields are dropped.
    """
    result: dict[str, Any] = {
        k: copy.deepcopy(v) for k, v in raw.items() if k not in _TOP_LEVEL_DROPPED
    }
    if "trigger" not in result and "trigger_type" in raw:
        trigger: dict[str, Any] = {}
        extra = raw.get("trigger_config")
        if isinstance(extra, Mapping):
            trigger.update(copy.deepcopy(dict(extra)))
        trigger["type"] = raw["trigger_type"]
        result["trigger"] = trigger

    raw_edges = raw.get("edges")
    handles: dict[Any, list[Any]] = {}
    for edge in _items(raw_edges):
        if isinstance(edge, Mapping) and isinstance(edge.get("source"), str):
            handles.setdefault(edge["source"], []).append(
                edge.get("branch", edge.get("sourceHandle"))
            )

    raw_nodes = raw.get("nodes")
    if isinstance(raw_nodes, list | tuple):
        nodes = [
            _node(n, handles.get(n.get("id"), []) if _has_str_id(n) else []) for n in raw_nodes
        ]
        result["nodes"] = nodes
        types = {n["id"]: n.get("type") for n in nodes if _has_str_id(n)}
        if isinstance(raw_edges, list | tuple):
            result["edges"] = [_edge(e, types) for e in raw_edges]
    return result
