"""Queues between threads bounded by the bytes they hold, so that 4K frames do not pile up.

A queue of frames that holds eight 854x480 frames (1.2 MB each) would hold
200 MB of 3840x2160 ones. A :class:`Budget` caps both the number of items and
their bytes, and always admits a few items, so that a queue of small frames
behaves as a plain bounded queue and a queue of large ones still overlaps
its two threads.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

MIB = 1 << 20
QUEUE_BYTES = 32 * MIB
"""The default byte budget of each queue of frames: eight 854x480 RGB frames (9.8 MB), five 1920x1080
ones, one 3840x2160 one (25 MB; a second would wait)."""


@dataclass(frozen=True)
class Budget:
    """At most ``max_items`` items and ``max_bytes`` bytes waiting, but ``min_items`` always admitted."""

    max_items: int
    max_bytes: int = QUEUE_BYTES
    min_items: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.min_items <= self.max_items:
            raise ValueError(f"Need 1 <= min_items <= max_items (got {self.min_items} and {self.max_items}).")

    def admits(self, items: int, nbytes: int) -> bool:
        """Whether ``items`` items holding ``nbytes`` bytes in all may wait together."""
        return items <= self.min_items or (items <= self.max_items and nbytes <= self.max_bytes)


def nbytes_of(item: object) -> int:
    """The bytes ``item`` holds, by its ``nbytes`` attribute (0 for items without one)."""
    return int(getattr(item, "nbytes", 0))


class ByteQueue(Generic[T]):
    """A FIFO queue between threads; :meth:`put` waits while the item would overrun the :class:`Budget`.

    ``size_of`` gives an item's bytes (default: :func:`nbytes_of`).
    """

    def __init__(self, budget: Budget, size_of: Callable[[T], int] = nbytes_of) -> None:
        self.budget = budget
        self.size_of = size_of
        self.nbytes = 0
        self._items: collections.deque[tuple[T, int]] = collections.deque()
        self._changed = threading.Condition()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: T) -> None:
        """Append ``item``, first waiting until the items before it leave room for it."""
        size = self.size_of(item)
        with self._changed:
            self._changed.wait_for(lambda: self._room_for(size))
            self._items.append((item, size))
            self.nbytes += size
            self._changed.notify_all()

    def wait_for_room(self, size: int) -> None:
        """Wait until an item of ``size`` bytes would be admitted (or the queue is cleared)."""
        with self._changed:
            self._changed.wait_for(lambda: self._room_for(size))

    def _room_for(self, size: int) -> bool:
        return self.budget.admits(len(self._items) + 1, self.nbytes + size)

    def get(self) -> T:
        """Remove and return the oldest item, waiting for one."""
        with self._changed:
            self._changed.wait_for(lambda: bool(self._items))
            return self._pop()

    def clear(self) -> None:
        """Drop every item waiting, waking a :meth:`put` that waits for room."""
        with self._changed:
            self._items.clear()
            self.nbytes = 0
            self._changed.notify_all()

    def _pop(self) -> T:
        item, size = self._items.popleft()
        self.nbytes -= size
        self._changed.notify_all()
        return item
