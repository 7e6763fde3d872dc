"""BufferPool and HeldFrames, the release bookkeeping every camera plugin shares."""

from __future__ import annotations

import threading

from cameras.buffers import BufferPool, HeldFrames


def test_held_frames_release_once_and_count_double_and_late_releases() -> None:
    held = HeldFrames()
    held.add(1, 7)
    held.add(2, None)  # an error frame holds no resource
    assert len(held) == 2 and held.resources_held() == 1
    assert held.pop(1) == (True, 7)
    assert held.pop(1) == (False, None) and held.double_releases == 1
    assert held.drain() == [None] and len(held) == 0
    assert held.pop(2) == (False, None) and held.late_releases == 1
    assert held.pop(2) == (False, None) and held.double_releases == 2


def test_held_frames_lock_can_be_held_around_pop() -> None:
    held = HeldFrames()
    held.add(1, "buffer")
    done = threading.Event()

    def release_atomically() -> None:
        with held.lock:  # what GenICam does to queue a buffer before close() can tear down
            assert held.pop(1) == (True, "buffer")
            assert held.resources_held() == 0
        done.set()

    t = threading.Thread(target=release_atomically)
    t.start()
    t.join(timeout=5)
    assert done.is_set()


def test_buffer_pool_lends_each_buffer_once_until_given_back() -> None:
    pool = BufferPool(2, 12)
    a, b = pool.acquire(0.01), pool.acquire(0.01)
    assert {a, b} == {0, 1} and pool.free == 0
    assert pool.acquire(0.01) is None
    assert a is not None
    view = pool.view(a, (2, 2, 3))
    assert view.shape == (2, 2, 3) and pool.grows == 0
    assert pool.view(a, (4, 4)).shape == (4, 4) and pool.grows == 1
    pool.give_back(a)
    pool.give_back(a)  # twice is harmless
    assert pool.free == 1 and pool.acquire(0.01) == a
    pool.close()
    pool.give_back(a)
    assert pool.acquire(None) is None  # closed: no more lending
