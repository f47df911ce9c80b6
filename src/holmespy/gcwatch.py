"""Memory after each full GC, the input of the `gcheap` rule.

A `gc.callbacks` hook runs on whichever host thread triggered the collection,
so it does the least possible: after a generation-2 collection it reads RSS
from `/proc/<pid>/statm` (open, one read, close: a few µs next to a full
collection's milliseconds, and no descriptor kept for the host to see) and
appends it to a bounded deque; the watcher thread drains the deque on its
next tick.
"""

from __future__ import annotations

import gc
import os
import time
from collections import deque

from holmespy.procstat import read_rss_bytes

TYPE_CHECKING = False  # typing's, without importing typing at start()
if TYPE_CHECKING:
    from typing import Any


class GCWatch:
    def __init__(self, statm_path: str | None = None, maxlen: int = 64) -> None:
        self._path = statm_path or f"/proc/{os.getpid()}/statm"
        self.samples: deque[tuple[float, int]] = deque(maxlen=maxlen)
        self.failures = 0

    def install(self) -> None:
        if self._on_gc not in gc.callbacks:
            gc.callbacks.append(self._on_gc)

    def uninstall(self) -> None:
        # A bound method compares equal to a fresh one, so `remove` finds ours.
        while self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def drain(self) -> list[tuple[float, int]]:
        """(epoch time, RSS bytes) of each full GC since the last drain, oldest first."""
        out: list[tuple[float, int]] = []
        while self.samples:  # (a GC on another thread may append meanwhile: then next tick)
            try:
                out.append(self.samples.popleft())
            except IndexError:
                break
        return out

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        # Runs inside the host's allocation path: never raise, never block.
        if phase != "stop" or info.get("generation") != 2:
            return
        try:
            self.samples.append((time.time(), read_rss_bytes(self._path)))
        except Exception:
            self.failures += 1
