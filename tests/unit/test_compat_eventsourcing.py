"""Contract tests of `infra.compat.eventsourcing`: the `eventsourcing` internals LinkFlow relies
on still exist and behave as it assumes. A failure here after an upgrade names the seam to
rework (`infra/compat/eventsourcing.py`) before anything else breaks in a subtler way. Pure:
an in-memory (POPO) application."""

from __future__ import annotations

import threading
from uuid import uuid4

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event

from infra.compat.eventsourcing import fastforward_lock


class Counter(Aggregate):
    def __init__(self) -> None:
        self.n = 0

    @event("Incremented")
    def increment(self) -> None:
        self.n += 1


def _app() -> Application[object]:
    return Application(
        env={
            "PERSISTENCE_MODULE": "eventsourcing.popo",
            "AGGREGATE_CACHE_MAXSIZE": "10",
            "AGGREGATE_CACHE_FASTFORWARD": "y",
        }
    )


def test_the_repository_still_has_its_fastforward_lock_hooks() -> None:
    repository = _app().repository
    for name in ("_use_fastforward_lock", "_disuse_fastforward_lock"):
        assert callable(getattr(repository, name, None)), (
            f"eventsourcing's Repository.{name} is gone: rework infra/compat/eventsourcing.py"
        )


def test_the_fastforward_lock_is_the_one_get_takes_to_update_a_cached_aggregate() -> None:
    """While the seam holds the lock, `Repository.get` cannot bring the cached aggregate up to
    date (so what the event store copies under it is never half-updated)."""
    app = _app()
    counter = Counter()
    app.save(counter)
    app.repository.get(counter.id)  # cached now
    newer = app.repository.get(counter.id)
    newer.increment()
    app.save(newer)
    got: list[int] = []
    with fastforward_lock(app.repository, counter.id, blocking=True) as locked:
        assert locked
        reader = threading.Thread(target=lambda: got.append(app.repository.get(counter.id).n))
        reader.start()
        reader.join(timeout=0.2)
        assert reader.is_alive(), "Repository.get did not wait for the fast-forward lock"
        with fastforward_lock(app.repository, counter.id, blocking=False) as again:
            assert not again  # busy: not waited for
    reader.join(timeout=5)
    assert got == [1]


def test_the_lock_is_released_and_not_leaked() -> None:
    app = _app()
    aggregate_id = uuid4()
    with fastforward_lock(app.repository, aggregate_id, blocking=True) as locked:
        assert locked
    with fastforward_lock(app.repository, aggregate_id, blocking=False) as locked:
        assert locked  # released by the first block
    assert aggregate_id not in app.repository._fastforward_locks_inuse  # disused
