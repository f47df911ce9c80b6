"""The process is going away: what captures in progress see, and how long they have.

When the host exits (atexit), gets SIGTERM, or `holmespy.stop()` is called, the
watcher *cuts* every capture at once instead of letting a 5 s CPU window run
out: a capture checks the cut between its steps, stops, and hands back what it
has; the event is then published marked partial. `deadline` is when
holmespy's part of the exit must be over (`HOLMES_EXIT_SECONDS` after the
cut): a capture that needs time to wind down (py-spy writing its samples)
takes at most what is left of it.
"""

from __future__ import annotations

import math
import threading
import time


class Cut:
    """Set once, when the process starts to go; readable from any thread."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason: str | None = None
        self.at = math.inf
        """time.monotonic() of the cut; inf while not cut."""
        self.deadline = math.inf
        """time.monotonic() by which holmespy's exit work must be done."""

    def cut(self, reason: str, budget: float) -> bool:
        """Cut now, with `budget` seconds to finish; False if it was cut already.

        A later cut keeps the first reason and moves the deadline only earlier.
        """
        now = time.monotonic()
        self.deadline = min(self.deadline, now + max(0.0, budget))
        if self._event.is_set():
            return False
        self.reason = reason
        self.at = now
        self._event.set()
        return True

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float) -> bool:
        """Sleep up to `timeout` seconds unless cut meanwhile; True if cut."""
        return self._event.wait(max(0.0, timeout))

    def left(self) -> float:
        """Seconds until the deadline (inf while not cut, never negative)."""
        return max(0.0, self.deadline - time.monotonic())

    @property
    def event(self) -> threading.Event:
        """The underlying event, for APIs that take one (`capture_heap(cancel=...)`)."""
        return self._event
