"""Queues bounded by bytes (small items wait as many as the count allows, large ones as many as fit) and
large freed blocks returned to the system."""

from __future__ import annotations

import platform
import threading

import numpy as np
import pytest

from dinotrack.memory import return_large_blocks
from dinotrack.queues import MIB, Budget, ByteQueue
from dinotrack.sources import Frame, prefetch

FRAME_480P = 480 * 854 * 3
FRAME_4K = 2160 * 3840 * 3


def test_budget_admits_by_count_for_small_items_and_by_bytes_for_large_ones() -> None:
    budget = Budget(8, 64 * MIB)
    assert budget.admits(8, 8 * FRAME_480P)
    assert not budget.admits(9, 9 * FRAME_480P)
    assert budget.admits(2, 2 * FRAME_4K)
    assert not budget.admits(3, 3 * FRAME_4K)


def test_budget_always_admits_its_minimum_however_large() -> None:
    assert Budget(4, 1, min_items=2).admits(2, 10**12)
    assert not Budget(4, 1, min_items=2).admits(3, 3)
    with pytest.raises(ValueError):
        Budget(2, min_items=3)


class Sized:
    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes


def put_in_background(queue: ByteQueue, items: list[Sized]) -> threading.Thread:
    thread = threading.Thread(target=lambda: [queue.put(item) for item in items], daemon=True)
    thread.start()
    return thread


def wait_for_blocked_put(queue: ByteQueue, thread: threading.Thread, count: int) -> None:
    """Wait until ``count`` items are in ``queue`` and the producer is still alive (waiting for room)."""
    with queue._changed:
        assert queue._changed.wait_for(lambda: len(queue) >= count, timeout=10)
    thread.join(timeout=0.05)
    assert thread.is_alive()


def test_put_waits_once_the_bytes_are_spent_and_resumes_when_an_item_leaves() -> None:
    queue: ByteQueue[Sized] = ByteQueue(Budget(8, 100))
    items = [Sized(40) for _ in range(4)]
    thread = put_in_background(queue, items)
    wait_for_blocked_put(queue, thread, 2)
    assert (len(queue), queue.nbytes) == (2, 80)
    assert queue.get() is items[0]
    wait_for_blocked_put(queue, thread, 2)
    assert [queue.get() for _ in range(3)] == items[1:]
    thread.join(timeout=10)
    assert (len(queue), queue.nbytes) == (0, 0)


def test_put_takes_one_item_larger_than_the_budget() -> None:
    queue: ByteQueue[Sized] = ByteQueue(Budget(8, 100))
    queue.put(big := Sized(1000))
    thread = put_in_background(queue, [Sized(1)])
    wait_for_blocked_put(queue, thread, 1)
    assert queue.get() is big
    thread.join(timeout=10)
    assert len(queue) == 1


def test_clear_empties_the_queue_and_frees_a_waiting_put() -> None:
    queue: ByteQueue[Sized] = ByteQueue(Budget(1, 100))
    queue.put(Sized(10))
    thread = put_in_background(queue, [last := Sized(20)])
    wait_for_blocked_put(queue, thread, 1)
    queue.clear()
    thread.join(timeout=10)
    assert (len(queue), queue.nbytes, queue.get()) == (1, 20, last)


def test_prefetch_keeps_fewer_large_frames_waiting_than_small_ones() -> None:
    def frames(shape: tuple[int, int], produced: list[int]):
        for index in range(20):
            produced.append(index)
            yield Frame(index, f"{index:05d}", np.zeros((*shape, 3), np.uint8))

    waiting = {}
    for shape in ((48, 64), (480, 640)):
        produced: list[int] = []
        items = prefetch(frames(shape, produced), depth=4, max_bytes=3 * 480 * 640 * 3)
        assert next(items).index == 0
        threading.Event().wait(0.3)  # let the producer fill the queue (the bound holds whatever the timing)
        waiting[shape] = len(produced) - 1
        assert [frame.index for frame in items] == list(range(1, 20))
    assert waiting[(48, 64)] <= 4  # the queue full; the producer makes no frame it cannot put
    assert waiting[(480, 640)] <= 3


def test_large_blocks_go_back_to_the_system_unless_the_user_set_glibc_s_threshold(monkeypatch) -> None:
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "1000000")
    assert not return_large_blocks()
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_")
    glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert return_large_blocks() == glibc
