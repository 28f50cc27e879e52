"""The Workflow aggregate's trigger gate: webhook and schedule triggers start only the active
version, and only while it has a trigger of that kind."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

import pytest

from domain.base import DomainError
from domain.workflow import Workflow

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def definition(trigger: dict) -> dict:
    return {
        "name": "w",
        "trigger": trigger,
        "nodes": [{"id": "a", "type": "transform", "config": {"set": {"x": 1}}}],
    }


def test_active_webhook_version_is_started() -> None:
    workflow = Workflow.create(uuid4(), "ws", definition({"type": "webhook"}), "u", NOW)
    workflow.publish_version(definition({"type": "manual"}), NOW)
    workflow.activate(1, NOW)
    assert workflow.triggered_version("webhook") == 1
    with pytest.raises(DomainError) as caught:
        workflow.triggered_version("schedule")
    assert caught.value.code == "trigger_inactive"


@pytest.mark.parametrize("end", ["deactivate", "archive", "never_activated"])
def test_inactive_workflow_refuses_triggers(end: str) -> None:
    workflow = Workflow.create(uuid4(), "ws", definition({"type": "webhook"}), "u", NOW)
    if end != "never_activated":
        workflow.activate(None, NOW)
        getattr(workflow, end)(NOW)
    with pytest.raises(DomainError):
        workflow.triggered_version("webhook")
