"""A per-process memo with a size bound, for what requests look up again and again."""

from __future__ import annotations

import threading
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BoundedMap(Generic[K, V]):
    """A thread-safe map that forgets everything at once when it is full: cheap, and a
    flood of new keys costs lookups again, never memory. Only for values that can be
    worked out again (a miss must be harmless)."""

    def __init__(self, limit: int):
        self.limit = limit
        self._items: dict[K, V] = {}
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        return self._items.get(key)

    def remember(self, key: K, value: V) -> None:
        if key in self._items and self._items[key] == value:
            return
        with self._lock:
            if len(self._items) >= self.limit:
                self._items.clear()
            self._items[key] = value

    def keys(self) -> list[K]:
        return list(self._items)
