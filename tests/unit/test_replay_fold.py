"""The pure parts of `linkflow replay check`: the column-by-column diff of a read-model row, the
aggregate type an event topic names, the comparison of states, and the re-fold of aggregates
(on the in-memory event store): a faithful log folds the same twice, a mutator that is not a
function of the events is caught by the second fold, an unknown topic is named with its version."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

from eventsourcing.domain import Aggregate

from domain.workflow import Workflow
from infra.eventlog import LoggedEvent
from infra.eventstore import EventStore
from infra.settings import Settings
from projections.refold import aggregate_type, first_difference, plain, refold
from projections.replay_check import MISSING, Difference, column_differences

NOW = datetime(2026, 1, 1, tzinfo=UTC)
DEFINITION = {"name": "w", "nodes": [{"id": "a", "type": "transform", "config": {}}]}
_ticks = itertools.count()


class Ticker(Aggregate):
    """An aggregate whose mutator reads a process-wide counter: not a function of its events."""

    class Ticked(Aggregate.Event):
        def apply(self, aggregate: Any) -> None:
            aggregate.seen = next(_ticks)

    def __init__(self) -> None:
        self.seen = -1


def _store() -> EventStore:
    return EventStore(Settings(), memory=True)


def _logged(store: EventStore, aggregate_id: Any) -> list[LoggedEvent]:
    stored = store.recorder.select_events(aggregate_id)
    return [
        LoggedEvent(i, s.originator_id, s.originator_version, s.topic, s.state)
        for i, s in enumerate(stored, 1)
    ]


def test_a_changed_column_is_one_difference_with_both_values() -> None:
    live = {"id": 1, "status": "failed", "attempts": 2}
    rebuilt = {"id": 1, "status": "completed", "attempts": 2}
    assert column_differences("rm_x", ["id"], live, rebuilt) == [
        Difference("rm_x", {"id": 1}, "status", "failed", "completed")
    ]
    assert column_differences("rm_x", ["id"], live, dict(live)) == []


def test_a_row_only_one_side_has_is_one_difference_keyed_by_its_primary_key() -> None:
    row = {"execution_id": "e", "node_id": "n", "status": "scheduled"}
    [missing] = column_differences("rm_node_runs", ["execution_id", "node_id"], None, row)
    assert (missing.key, missing.column, missing.live, missing.rebuilt) == (
        {"execution_id": "e", "node_id": "n"},
        "*",
        MISSING,
        row,
    )
    assert "rm_node_runs [execution_id=e, node_id=n] *: live (no row)" in missing.describe()
    [extra] = column_differences("rm_node_runs", ["execution_id", "node_id"], row, None)
    assert (extra.live, extra.rebuilt) == (row, MISSING)


def test_the_aggregate_type_is_the_class_that_owns_the_event() -> None:
    assert aggregate_type("domain.execution:Execution.NodeStarted") == "Execution"
    assert aggregate_type("a.b:Outer.Inner.Event") == "Outer.Inner"
    assert aggregate_type("not a topic") == "not a topic"


def test_states_compare_as_plain_data_and_the_first_difference_is_named() -> None:
    a = {"nodes": {"fetch": {"status": "ok"}}, "items": [1, 2], "tags": {"x", "y"}}
    b = {"nodes": {"fetch": {"status": "failed"}}, "items": [1, 2], "tags": {"y", "x"}}
    assert first_difference(plain(a), plain(a)) is None
    assert first_difference(plain(a), plain(b)) == "nodes.fetch.status"
    assert first_difference([1], [1, 2]) == "(length)"
    assert first_difference({"a": 1}, {"b": 1}) == "a"


def test_a_faithful_aggregate_folds_the_same_twice() -> None:
    store = _store()
    workflow = Workflow.create(uuid4(), str(uuid4()), DEFINITION, "u", NOW)
    workflow.publish_version({**DEFINITION, "name": "w2"}, NOW)
    workflow.activate(2, NOW)
    store.append(workflow)
    folded, failure = refold(store, _logged(store, workflow.id))
    assert failure is None
    assert (folded.latest_version, folded.active_version, folded.name) == (2, 2, "w2")


def test_a_mutator_that_is_not_a_function_of_its_events_fails_the_second_fold() -> None:
    store = _store()
    ticker = Ticker()
    ticker.trigger_event(Ticker.Ticked)
    store.append(ticker)
    folded, failure = refold(store, _logged(store, ticker.id))
    assert folded is None and failure is not None
    assert (failure.aggregate_type, failure.check) == ("Ticker", "second fold")
    assert failure.message == "the two folds differ at seen"


def test_an_event_whose_topic_does_not_resolve_fails_the_fold_at_its_version() -> None:
    store = _store()
    workflow = Workflow.create(uuid4(), str(uuid4()), DEFINITION, "u", NOW)
    store.append(workflow)
    events = _logged(store, workflow.id)
    gone = "domain.workflow:Workflow.WorkflowRenamed"
    events.append(LoggedEvent(2, workflow.id, 2, gone, events[0].state))
    folded, failure = refold(store, events)
    assert folded is None and failure is not None
    assert (failure.aggregate_id, failure.aggregate_type, failure.check) == (
        workflow.id,
        "Workflow",
        "fold",
    )
    assert (failure.version, failure.topic) == (2, gone)
    assert f"Workflow {workflow.id}: fold failed at version 2 ({gone})" in failure.describe()
