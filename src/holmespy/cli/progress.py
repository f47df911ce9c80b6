"""A one-line progress bar on stderr, for copies big enough to wait for.

It draws only when stderr is a terminal: in a pipe, a log or a test, a bar
is a stream of carriage returns no one reads.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from holmespy.cli.text import field, size

BIG_FILE = 1 << 20
"""Files from this size up get a bar; smaller ones arrive before a bar could be read."""

WIDTH = 30
REDRAW_SECONDS = 0.1


class ProgressBar:
    def __init__(self, label: str, total: int, stream: TextIO) -> None:
        self.label = field(label, 60)  # it names a key from the store
        self.total = total
        self.done = 0
        self.stream = stream
        self.began = time.monotonic()
        self.drawn_at = 0.0

    def __call__(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if now - self.drawn_at >= REDRAW_SECONDS or self.done >= self.total:
            self.drawn_at = now
            self.draw(now)

    def draw(self, now: float) -> None:
        share = min(1.0, self.done / self.total) if self.total else 1.0
        filled = int(share * WIDTH)
        rate = self.done / max(now - self.began, 1e-6)
        bar = "█" * filled + "░" * (WIDTH - filled)
        self.stream.write(
            f"\r{self.label} {bar} {share:4.0%} {size(self.done)}/{size(self.total)}"
            f" {size(rate)}/s\x1b[K"
        )
        self.stream.flush()

    def close(self) -> None:
        self.draw(time.monotonic())
        self.stream.write("\n")
        self.stream.flush()


class _Silent:
    def __call__(self, count: int) -> None:
        pass

    def close(self) -> None:
        pass


def progress_for(label: str, total: int, stream: TextIO | None = None) -> ProgressBar | _Silent:
    stream = stream if stream is not None else sys.stderr
    if total >= BIG_FILE and stream.isatty():
        return ProgressBar(label, total, stream)
    return _Silent()
