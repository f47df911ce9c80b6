"""`holmespy.status()`'s answer: a dataclass, so `dataclasses.asdict()` works on it.

A module of its own, imported when a status is first asked for:
`dataclasses` would cost `start()` ~15 ms (`benchmarks/startup.py`). It is
imported `with importing:` (holmespy.lazyimport), even from a host thread:
`@dataclass` reads `sys.modules["typing"]`, which a capture lane importing
typing at that moment leaves half made ("partially initialized module
'typing' has no attribute 'ClassVar'").
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Status:
    """A snapshot of what the watcher has done; every failure it absorbed is counted here."""

    enabled: bool
    running: bool
    pid: int
    ticks: int = 0
    events: int = 0
    last_event: str | None = None
    dropped: int = 0
    """Events dropped, or captured without their CPU/heap window, because a lane was full."""
    partial: int = 0
    """Events published with captures cut short or not taken (the process was going)."""
    salvaged: int = 0
    """Events published at start from temp folders that dead processes left in the dump folder."""
    stale_removed: int = 0
    """Temp folders of dead processes removed at start with nothing worth publishing."""
    capture_failures: int = 0
    errors: int = 0
    """Internal errors absorbed on holmespy's threads (sampling, rules, captures)."""
    last_error: str | None = None
    skipped: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per rule, fires suppressed by cooldown, limit or the CPU-max guard."""
    last_sample: dict[str, object] | None = None
    limits: dict[str, object] = field(default_factory=dict)
    task_stride: int = 1
    """Task counting runs every `task_stride` ticks (more than 1 when counting is costly)."""
    storage: dict[str, int | str | None] = field(default_factory=dict)
    """The uploader's counters: uploaded, failed attempts, dropped by the spool cap, pending…"""
    stacks: dict[str, object] = field(default_factory=dict)
    """The flight recorder's ring (ticks, samples and stacks held, rate) and the loop watchdog
    (loops watched, stalls seen), or "off"; the sampling thread's CPU share."""
