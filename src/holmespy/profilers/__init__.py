"""Captures: what a triggered event writes into its bundle.

Each capture is a function that writes one file into the event's folder
(still under its temporary name) and returns a few facts for `event.json`.
`CAPTURES` says which captures each rule takes; the CPU profile (`cpu.pb.gz`)
and heap profile (`heap.pb.gz`, `heap-types.txt`) plug in here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from holmespy.bundle import write_private


@dataclass(frozen=True)
class CaptureContext:
    directory: Path
    """The event's folder under its temporary name; captures write their files here."""
    rule: str
    exclude_threads: frozenset[int] = frozenset()
    """holmespy's own thread idents: never dumped, never profiled."""
    options: Mapping[str, Any] = field(default_factory=dict)


Capture = Callable[[CaptureContext], dict[str, Any]]


def capture_threads(ctx: CaptureContext) -> dict[str, Any]:
    from holmespy.profilers.threads import format_threads

    text = format_threads(exclude=ctx.exclude_threads)
    write_private(ctx.directory / "threads.txt", text.encode())
    return {"file": "threads.txt"}


def capture_tasks(ctx: CaptureContext) -> dict[str, Any]:
    from holmespy.profilers.tasks import format_tasks

    text = format_tasks()
    write_private(ctx.directory / "tasks.txt", text.encode())
    return {"file": "tasks.txt"}


# Thread stacks are cheap (~1 ms) and say what every thread was doing, so every
# event carries them; the task dump goes where asyncio is the likely culprit.
CAPTURES: dict[str, tuple[tuple[str, Capture], ...]] = {
    "cpu": (("threads", capture_threads), ("tasks", capture_tasks)),
    "mem": (("threads", capture_threads),),
    "thread": (("threads", capture_threads),),
    "task": (("tasks", capture_tasks), ("threads", capture_threads)),
    "gcheap": (("threads", capture_threads),),
}
