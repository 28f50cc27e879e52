"""The event store's aggregate cache, bounded by count and by bytes: the library's LRU cache
(which fast-forwards a cached aggregate on use) with a byte budget on top. An aggregate that says
how much it holds (a `footprint` attribute, kept up to date by its events: Executions and
Workflows, whose definitions, inputs and outputs are what grows) counts that much; any other
counts `DEFAULT_FOOTPRINT`. Past the budget, the least recently used aggregates are dropped (a
later read loads them again). A cached aggregate that grows by fast-forwarding is weighed again
when it is next put (every save puts what it saved).

Imported by `infra.eventstore`.
"""

from __future__ import annotations

from threading import Lock
from typing import Any

from eventsourcing.application import LRUCache

DEFAULT_FOOTPRINT = 2 * 1024


def _weight(value: Any) -> int:
    weight = getattr(value, "footprint", None)
    return weight if isinstance(weight, int) else DEFAULT_FOOTPRINT


class BoundedCache(LRUCache[Any, Any]):
    def __init__(self, maxsize: int, max_bytes: int) -> None:
        super().__init__(maxsize=maxsize)
        self.max_bytes = max_bytes
        self.bytes = 0
        self._weights: dict[Any, int] = {}
        self._weights_lock = Lock()

    def put(self, key: Any, value: Any) -> Any:
        evicted = super().put(key, value)
        evicted_key = evicted[0] if evicted else None
        with self._weights_lock:
            if evicted_key is not None:
                self.bytes -= self._weights.pop(evicted_key, 0)
            weight = _weight(value)
            self.bytes += weight - self._weights.get(key, 0)
            self._weights[key] = weight
        while self.bytes > self.max_bytes:
            oldest = self._oldest()
            if oldest is None or oldest == key:
                break  # the newest alone may pass the budget: it is what is in use
            self.get(oldest, evict=True)
        return evicted

    def get(self, key: Any, *, evict: bool = False) -> Any:
        value = super().get(key, evict=evict)
        if evict:
            with self._weights_lock:
                self.bytes -= self._weights.pop(key, 0)
        return value

    def _oldest(self) -> Any:
        with self.lock:
            return self.root[self.NEXT][self.KEY]
