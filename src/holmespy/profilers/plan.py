"""One event's captures, in the order `CAPTURES` gives, with waiting snapshots beside the window.

Most captures run one after the other on the capture worker's thread. A few
instant snapshots spend their time waiting rather than working: the task
dump waits up to half a second for each event loop to run a probe callback,
and a blocked loop (the very case a CPU event is often about) makes it wait
the whole time. When a window capture (a CPU profile, a heap tracing window)
follows in the same event, such a snapshot runs beside it on a short-lived
thread instead, started just before the window, so the wait falls inside the
window rather than before it. The snapshot still shows the moment of the
trigger; the window's profile leaves that thread out like holmespy's others.

Failures are handled as for sequential captures: an `OSError` (a full or
read-only disk) fails the whole event, anything else becomes the capture's
`error` fact and is reported through `on_error`.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from holmespy.profilers import Capture, CaptureContext

BESIDE_WINDOW = frozenset({"tasks"})
"""Snapshots whose time is mostly waiting (the task dump's loop probe)."""

WINDOWS = frozenset({"cpu", "heap", "heap-2"})
"""Captures that last a configured window."""

SIDE_JOIN_GRACE = 30.0
"""Seconds past the window a side snapshot may still take before the event goes without it."""

Plan = Sequence[tuple[str, Capture]]
OnError = Callable[[str, BaseException], None]


class _Side:
    """One snapshot running on its own thread; its facts, or what it raised."""

    def __init__(self, name: str, capture: Capture, ctx: CaptureContext, on_error: OnError) -> None:
        self.name = name
        self.facts: dict[str, Any] | None = None
        self.raised: OSError | None = None
        self._capture, self._ctx, self._on_error = capture, ctx, on_error
        self.thread = threading.Thread(target=self._run, name="holmespy-beside", daemon=True)

    def _run(self) -> None:
        try:
            self.facts = _run_one(self.name, self._capture, self._ctx, self._on_error)
        except OSError as exc:
            self.raised = exc


def run_captures(plan: Plan, ctx: CaptureContext, on_error: OnError) -> dict[str, dict[str, Any]]:
    """Run `plan` into `ctx.directory`; each capture's facts by name, in the plan's order.

    Raises `OSError` when a capture could not write its files.
    """
    captures: dict[str, dict[str, Any]] = {name: {} for name, _ in plan}
    sides: list[_Side] = []
    window_ctx = ctx
    for index, (name, capture) in enumerate(plan):
        beside = name in BESIDE_WINDOW and any(later in WINDOWS for later, _ in plan[index + 1 :])
        if beside:
            side = _Side(name, capture, ctx, on_error)
            side.thread.start()
            sides.append(side)
            # The window's profile leaves the side thread out, as it does the worker.
            if side.thread.ident is not None:
                window_ctx = dataclasses.replace(
                    window_ctx, exclude_threads=window_ctx.exclude_threads | {side.thread.ident}
                )
            continue
        captures[name] = _run_one(name, capture, window_ctx, on_error)
    for side in sides:
        side.thread.join(SIDE_JOIN_GRACE)
        if side.raised is not None:
            raise side.raised
        if side.facts is None:
            # Still running: the event goes without it (its late write fails harmlessly,
            # the folder having been renamed or removed by then).
            error = f"still running {SIDE_JOIN_GRACE:g} s after the window ended"
            side.facts = {"error": error}
            on_error(f"{side.name} capture", TimeoutError(error))
        captures[side.name] = side.facts
    return captures


def _run_one(name: str, capture: Capture, ctx: CaptureContext, on_error: OnError) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        facts = capture(ctx)
    except OSError:
        raise  # a full or read-only disk fails the whole event
    except Exception as exc:
        facts = {"error": f"{type(exc).__name__}: {exc}"}
        on_error(f"{name} capture", exc)
    facts["seconds"] = round(time.perf_counter() - started, 6)
    return facts
