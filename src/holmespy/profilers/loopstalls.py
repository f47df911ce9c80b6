"""`loop.txt` and `loop.pb.gz`: the event-loop stalls the watchdog caught, as text and profile.

`loop.txt` tells each stall in a few lines: which loop, which thread, when it
began, how long it lasted, and the stack seen most while it lasted,
innermost call first with its source line, which names the blocking call
and the handler that made it. `loop.pb.gz` holds every stall sample, one
per 1/STALL_HZ s of stall (wall time), labelled by thread, loop and stall
number, for `go tool pprof` and `holmespy top/flame`.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from typing import Any

from holmespy.formats.profile import Frame, Profile, ValueType
from holmespy.profilers.threads import format_frame_line, header_time, one_line, python_version
from holmespy.watchdog import CHECK_EVERY, STALL_HZ, StallView

__all__ = ["format_stalls", "stall_facts", "stalls_profile"]

FRAMES_SHOWN = 30
"""Frames of the most-seen stack written per stall (innermost first)."""

OTHER_STACKS = 3
"""Other stacks seen during a stall, listed by their innermost frame."""

FACT_FRAMES = 8
"""Frames of the most-seen stack that event.json keeps per stall (for `holmespy show`)."""

SAMPLES = ValueType("samples", "count")
WALL_NS = ValueType("wall", "nanoseconds")


def _when(epoch: float) -> str:
    return header_time(dt.datetime.fromtimestamp(epoch, dt.UTC))


def _frame_text(frame: Frame) -> str:
    return f"{one_line(frame.function)} ({one_line(frame.filename)}:{frame.line})"


def _length(view: StallView) -> str:
    if view.ended:
        return f"{view.seconds:.2f} s"
    return f"{view.seconds:.2f} s so far: still stalled when this was written"


def format_stalls(
    stalls: Sequence[StallView], *, threshold: float, now: dt.datetime | None = None
) -> str:
    """The text of `loop.txt`, newest stall first. Never raises on odd names (escaped)."""
    counted = [s for s in stalls if not s.excused]
    out = [
        f"holmespy loop stalls: pid {os.getpid()}, {len(stalls)} stall"
        f"{'' if len(stalls) == 1 else 's'}, at {header_time(now)}, {python_version()}",
        f"A stall is a time an event loop ran no callback for more than {threshold * 1000:g} ms"
        " (the loop rule's min); its thread was sampled",
        f"{STALL_HZ:g} times a second meanwhile. It counts from when the loop was last known"
        f" alive (looked at every {CHECK_EVERY * 1000:g} ms),",
        f"so it may read up to {CHECK_EVERY * 1000:g} ms longer than the blocking call. Stacks"
        " are innermost call first: `function (file:line)`, then that line's source.",
    ]
    if not stalls:
        out += ["", "No stall is on record (they may have been dropped: only the newest are kept)."]
    for number, view in enumerate(stalls, 1):
        out.append("")
        out += _stall(number, len(stalls), view)
    if len(counted) != len(stalls):
        out += [
            "",
            "Stalls marked (holmespy's own) overlapped a holmespy capture that pauses the"
            " whole process (a heap snapshot); the loop rule does not count them.",
        ]
    return "\n".join(out) + "\n"


def _stall(number: int, total: int, view: StallView) -> list[str]:
    own = "  (holmespy's own: during a heap capture)" if view.excused else ""
    thread = "unknown (the loop does not say which thread runs it)"
    if view.thread_id is not None:
        name = one_line(view.thread) if view.thread is not None else "<unknown>"
        thread = f'"{name}" ident={view.thread_id}'
    lines = [
        f"stall {number} of {total}: {_length(view)}{own}",
        f"  loop      {view.loop}",
        f"  thread    {thread}",
        f"  start     {_when(view.start_wall)} (when the loop was last known alive)",
        f"  seen      {view.detected_after:.3f} s after the start",
    ]
    if view.starved >= 0.001:
        lines.append(
            f"  waited    {view.starved:.3f} s of it for a CPU (the machine was overloaded; the"
            " rule does not count that wait)"
        )
    sampled = sum(n for _, n, _ in view.samples)
    capped = f", then no more (at most {view.sample_count})" if view.capped else ""
    lines.append(f"  samples   {view.sample_count} at {STALL_HZ:g} Hz while stalled{capped}")
    if view.no_frames:
        lines.append(f"            {view.no_frames} found no Python frame on the loop's thread")
    if not view.samples:
        why = (
            "the thread could not be sampled: the loop's thread is not known"
            if view.thread_id is None
            else "no sample caught a Python frame (the stall ended first, or the thread "
            "held the GIL in C code the whole time)"
        )
        return [*lines, f"  no stack: {why}"]
    top, count, _ = view.samples[0]
    lines.append(
        f"  stack seen most ({count} of {sampled} samples, {100.0 * count / sampled:.0f} %),"
        " innermost call first:"
    )
    for frame in top.frames[:FRAMES_SHOWN]:
        lines += format_frame_line(
            one_line(frame.function), one_line(frame.filename), frame.line, "    "
        )
    if len(top.frames) > FRAMES_SHOWN:
        lines.append(f"    ... {len(top.frames) - FRAMES_SHOWN} older frames omitted")
    others = view.samples[1 : 1 + OTHER_STACKS]
    if others:
        lines.append("  also seen (innermost frame):")
        for stack, n, _ in others:
            inner = _frame_text(stack.frames[0]) if stack.frames else "(no Python frames)"
            lines.append(f"    {n:>5} samples: {inner}")
    return lines


def stalls_profile(stalls: Sequence[StallView]) -> Profile:
    """Every stall sample: (samples, wall ns) per (stack, thread, loop, stall number)."""
    starts = [s.start_wall for s in stalls]
    profile = Profile(
        sample_types=(SAMPLES, WALL_NS),
        time_nanos=int(min(starts) * 1e9) if starts else 0,
        duration_nanos=int(sum(s.seconds for s in stalls) * 1e9),
        period_type=WALL_NS,
        period=int(1e9 / STALL_HZ),
        default_sample_type=WALL_NS.type,
    )
    for number, view in enumerate(stalls, 1):
        thread = one_line(view.thread or "<unknown>")
        for stack, count, wall in view.samples:
            profile.add(
                stack.frames, (count, wall), thread=thread, loop=view.loop, stall=str(number)
            )
    profile.comments.append(
        f"holmespy loop watchdog: a stalled loop's thread sampled {STALL_HZ:g} times a second"
    )
    return profile


def stall_facts(stalls: Sequence[StallView]) -> list[dict[str, Any]]:
    """Each stall for `event.json`: numbers and the top of its most-seen stack."""
    facts = []
    for view in stalls:
        top = view.samples[0][0].frames[:FACT_FRAMES] if view.samples else ()
        facts.append(
            {
                "loop": view.loop,
                "thread": view.thread,
                "start": _when(view.start_wall),
                "seconds": round(view.seconds, 3),
                "ended": view.ended,
                "samples": view.sample_count,
                "top_share": (
                    round(view.samples[0][1] / sum(n for _, n, _ in view.samples), 3)
                    if view.samples
                    else None
                ),
                "stack": [_frame_text(f) for f in top],
                "excused": view.excused,
                "cpu_wait": round(view.starved, 3),
            }
        )
    return facts
