"""Frame buffers and who holds them: the pieces the cameras share for zero-copy hand-over.

`BufferPool` lends preallocated uint8 buffers by index and takes each back only after the
pipeline released the frame in it. `HeldFrames` is the exactly-once release bookkeeping: which
token holds which resource, and the double / late releases that were counted no-ops.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np


class BufferPool:
    """A fixed set of preallocated uint8 buffers lent out by index.

    A buffer is lent again only after `give_back`; `acquire` waits (bounded) for one. Buffers
    are flat; `view` shapes the leading bytes of one (growing it, counted, if an image is larger
    than any seen before). Thread-safe: acquire from the camera thread, give back from any.
    """

    def __init__(self, size: int, nbytes: int) -> None:
        self._bufs = [np.empty(max(nbytes, 1), np.uint8) for _ in range(size)]
        self._free = list(range(size))
        self._cond = threading.Condition()
        self._closed = False
        self.grows = 0

    @property
    def size(self) -> int:
        return len(self._bufs)

    @property
    def free(self) -> int:
        with self._cond:
            return len(self._free)

    def acquire(self, timeout: float | None) -> int | None:
        """A free buffer's index, or None after `timeout` seconds (None: wait until closed)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._free:
                if self._closed:
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            if self._closed:
                return None
            return self._free.pop()

    def give_back(self, index: int) -> None:
        with self._cond:
            if index not in self._free:
                self._free.append(index)
            self._cond.notify()

    def view(self, index: int, shape: tuple[int, ...]) -> np.ndarray:
        n = int(np.prod(shape))
        if self._bufs[index].size < n:
            self._bufs[index] = np.empty(n, np.uint8)
            self.grows += 1
        return self._bufs[index][:n].reshape(shape)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class HeldFrames:
    """Exactly-once release bookkeeping shared by the cameras: token -> resource, with counts.

    A token released twice is a counted no-op (`double_releases`); one taken back by `drain()`
    (the camera closed under it) and released afterwards is a counted no-op (`late_releases`).
    `lock` is reentrant: a camera that must give a resource back atomically with its release
    (a GenTL buffer queued before `close()` can destroy the stream) holds it around `pop()`.
    """

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._held: dict[int, Any] = {}
        self._orphans: set[int] = set()
        self.double_releases = 0
        self.late_releases = 0

    def add(self, token: int, resource: Any) -> None:
        with self.lock:
            self._held[token] = resource

    def pop(self, token: Any) -> tuple[bool, Any]:
        """(True, resource) the first time a token is released, (False, None) after (counted)."""
        with self.lock:
            if isinstance(token, int) and token in self._held:
                return True, self._held.pop(token)
            if token in self._orphans:
                self._orphans.discard(token)
                self.late_releases += 1
            else:
                self.double_releases += 1
            return False, None

    def drain(self) -> list[Any]:
        """Take every held resource back (close()); later releases of them are counted no-ops."""
        with self.lock:
            out = list(self._held.values())
            self._orphans.update(self._held)
            self._held.clear()
            return out

    def __len__(self) -> int:
        with self.lock:
            return len(self._held)

    def resources_held(self) -> int:
        """Held tokens that hold a resource (error frames hold none)."""
        with self.lock:
            return sum(1 for r in self._held.values() if r is not None)
