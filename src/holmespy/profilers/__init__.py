"""Captures: what a triggered event writes into its bundle.

Each capture is a function that writes its files into the event's folder
(still under its temporary name) and returns a few facts for `event.json`.
`CAPTURES` says which captures each rule takes, in order: the instant
snapshots (threads, tasks) come first so they show the moment of the trigger,
then the windows that take seconds (CPU profile, heap tracing). Every capture
watches `ctx.cut`: when the process starts to go it stops at once and
returns what it has.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from holmespy.bundle import write_private
from holmespy.config import Config
from holmespy.lazyimport import importing
from holmespy.registry import METRICS
from holmespy.teardown import Cut

if TYPE_CHECKING:
    from holmespy.recorder import Recording
    from holmespy.watchdog import Watchdog


@dataclass(frozen=True)
class CaptureContext:
    directory: Path
    """The event's folder under its temporary name; captures write their files here."""
    rule: str
    config: Config
    exclude_threads: frozenset[int] = frozenset()
    """holmespy's own thread idents: never dumped, never profiled."""
    memory: dict[str, Any] = field(default_factory=dict)
    """What captures keep between events of this process (the last census, the last holders)."""
    cut: Cut = field(default_factory=Cut)
    """Set when the process starts to go: stop at once, return what was taken."""
    recording: Recording | None = None
    """The flight recorder's ring as of the trigger (None: HOLMES_RECORDER=off, or an event
    right after start, before the sampling thread made the recorder)."""
    watchdog: Watchdog | None = None
    """The loop watchdog, with the stalls it caught (None: HOLMES_LOOP=off)."""
    others_waiting: Callable[[], bool] = lambda: False
    """True while another event's capture waits for this one: a capture that could take
    its time (waiting for a stall to end) stops waiting."""


Capture = Callable[[CaptureContext], dict[str, Any]]


def _write_twins(
    ctx: CaptureContext, text_file: str, text: str, data_file: str, data: Any
) -> dict[str, Any]:
    """Write a dump's text and, beside it, the same objects as JSON; the facts naming both.

    JSON beyond what readers take (`holmespy.dumpjson`, 4 MiB) is not written: readers
    then show the text as it is, and `data_error` says why.
    """
    with importing:
        import json

        from holmespy.manifest import MAX_EVENT_JSON

    write_private(ctx.directory / text_file, text.encode())
    raw = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
    if len(raw) > MAX_EVENT_JSON:
        return {"file": text_file, "data_error": f"{data_file} not written: {len(raw):,} bytes"}
    write_private(ctx.directory / data_file, raw)
    return {"file": text_file, "data": data_file}


def capture_threads(ctx: CaptureContext) -> dict[str, Any]:
    with importing:
        from holmespy.profilers.threads import dump_threads
        from holmespy.stackdump import FILE

    text, dump = dump_threads(exclude=ctx.exclude_threads)
    if dump is None:
        write_private(ctx.directory / "threads.txt", text.encode())
        return {"file": "threads.txt"}
    return _write_twins(ctx, "threads.txt", text, FILE, dump.to_json())


def capture_tasks(ctx: CaptureContext) -> dict[str, Any]:
    with importing:
        from holmespy.profilers.tasks import dump_tasks, render
        from holmespy.taskdump import FILE, TEXT_FILE

    dump = dump_tasks(cancel=ctx.cut.event)
    return _write_twins(ctx, TEXT_FILE, render(dump), FILE, dump.to_json())


def capture_cpu_profile(ctx: CaptureContext) -> dict[str, Any]:
    with importing:
        from holmespy.formats.pprof import write_pprof
        from holmespy.profilers.cpu import capture_cpu

    result = capture_cpu(
        ctx.config.cpu_profile_seconds,
        engine=ctx.config.cpu_engine,
        exclude_threads=ctx.exclude_threads,
        rate=ctx.config.cpu_profile_rate,
        cut=ctx.cut,
        workdir=ctx.directory,
    )
    facts: dict[str, Any] = {"engine": result.engine, "why": result.why, **result.facts}
    if result.profile is None:
        facts["error"] = f"no CPU profile: {result.why}"
        return facts
    write_pprof(result.profile, ctx.directory / "cpu.pb.gz")
    return {"file": "cpu.pb.gz", **facts}


def _heap_window(ctx: CaptureContext, filename: str) -> dict[str, Any]:
    with importing:
        from holmespy.formats.pprof import write_pprof
        from holmespy.profilers.heap import capture_heap

    result = capture_heap(ctx.config.heap_seconds, cancel=ctx.cut.event)
    facts: dict[str, Any] = dict(result.facts)
    if result.profile is None:
        facts["error"] = f"no heap profile: {result.error}"
        return facts
    write_pprof(result.profile, ctx.directory / filename)
    return {"file": filename, **facts}


def capture_heap_profile(ctx: CaptureContext) -> dict[str, Any]:
    return _heap_window(ctx, "heap.pb.gz")


def capture_second_heap_profile(ctx: CaptureContext) -> dict[str, Any]:
    """The after-GC rule's second window, right after the first: diff the two to see growth."""
    return _heap_window(ctx, "heap-2.pb.gz")


def capture_type_census(ctx: CaptureContext) -> dict[str, Any]:
    with importing:
        from holmespy.census import FILE, TEXT_FILE
        from holmespy.profilers.heap import census

    result = census(ctx.memory.get("census"))
    ctx.memory["census"] = result.counts
    return {**result.facts, **_write_twins(ctx, TEXT_FILE, result.text(), FILE, result.to_json())}


def capture_heap_holders(ctx: CaptureContext) -> dict[str, Any]:
    with importing:
        from holmespy.heapholders import FILE, TEXT_FILE, render
        from holmespy.limits import detect_limits
        from holmespy.profilers.holders import holders_file

    limit = detect_limits(mem_limit=ctx.config.mem_limit).mem_bytes
    found, facts, baseline = holders_file(ctx.memory.get("holders"), limit, ctx.exclude_threads)
    if baseline is not None:
        ctx.memory["holders"] = baseline
    return {**facts, **_write_twins(ctx, TEXT_FILE, render(found), FILE, found.to_json())}


def capture_loop_stalls(ctx: CaptureContext) -> dict[str, Any]:
    """`loop.txt` and `loop.pb.gz`: the stalls the watchdog caught, newest first."""
    from holmespy.formats.pprof import write_pprof
    from holmespy.profilers.loopstalls import format_stalls, stall_facts, stalls_profile
    from holmespy.watchdog import MAX_STALL_SAMPLES, STALL_HZ

    if ctx.watchdog is None:
        return {"off": "HOLMES_LOOP=off"}
    # A stall still going on is what the event is about: let it end (or reach its
    # sampling cap), so loop.txt has its whole length and every sample, unless
    # another event's capture is queued behind this one and would be delayed.
    calm = ctx.watchdog.wait_until_calm(MAX_STALL_SAMPLES / STALL_HZ, give_up=ctx.others_waiting)
    stalls = ctx.watchdog.stalls()
    text = format_stalls(stalls, threshold=ctx.watchdog.threshold)
    write_private(ctx.directory / "loop.txt", text.encode())
    write_pprof(stalls_profile(stalls), ctx.directory / "loop.pb.gz")
    facts: dict[str, Any] = {"file": "loop.txt", "profile": "loop.pb.gz"}
    if not calm:
        facts["note"] = (
            "a loop was still stalled when this was written (it lasted too long, another"
            " event's capture was waiting, or the process was going)"
        )
    return {**facts, "stalls": stall_facts(stalls)}


def capture_recorder(ctx: CaptureContext) -> dict[str, Any]:
    """`recorder.pb.gz`: the flight recorder's window before the trigger, up to now."""
    from holmespy.formats.pprof import write_pprof
    from holmespy.recorder import recorder_profile

    recording = ctx.recording
    if recording is None:
        if ctx.config.recorder is None:
            return {"off": "HOLMES_RECORDER=off"}
        # Its thread makes it at its first wake-up, right after start() (holmespy.stackwatch).
        return {"why": "the flight recorder was not made yet: the rule fired right after start"}
    ticks = recording.ticks()
    rate = recording.recorder.rate
    profile = recorder_profile(ticks, recording.trigger_wall, rate)
    write_pprof(profile, ctx.directory / "recorder.pb.gz")
    first = ticks[0].wall if ticks else recording.trigger_wall
    last = ticks[-1].wall if ticks else recording.trigger_wall
    return {
        "file": "recorder.pb.gz",
        "rate_hz": rate,
        "ticks": len(ticks),
        "seconds_before_trigger": round(max(0.0, recording.trigger_wall - first), 3),
        "seconds_after_trigger": round(max(0.0, last - recording.trigger_wall), 3),
        "weighting": "cpu: each thread's CPU time since the previous tick; wall: every thread",
    }


THREADS = ("threads", capture_threads)
TASKS = ("tasks", capture_tasks)
CPU = ("cpu", capture_cpu_profile)
HEAP = ("heap", capture_heap_profile)
HEAP_2 = ("heap-2", capture_second_heap_profile)
TYPES = ("heap-types", capture_type_census)
HOLDERS = ("heap-holders", capture_heap_holders)
LOOP = ("loop", capture_loop_stalls)
RECORDER = ("recorder", capture_recorder)

BY_NAME: dict[str, tuple[str, Capture]] = {
    capture[0]: capture
    for capture in (THREADS, TASKS, CPU, HEAP, HEAP_2, TYPES, HOLDERS, LOOP, RECORDER)
}
# Which captures each rule takes is said once, in `holmespy.registry`.
CAPTURES: dict[str, tuple[tuple[str, Capture], ...]] = {
    metric.name: tuple(BY_NAME[name] for name in metric.captures) for metric in METRICS
}

LAST = frozenset({RECORDER[0]})
"""Captures that close an event on whichever lane it ends: with its windows when it has
any, else right after its instant captures."""

PAUSES_PROCESS = frozenset({HEAP[0], HEAP_2[0], TYPES[0], HOLDERS[0]})
"""Captures that can hold the GIL long enough to stall every event loop (the tracemalloc
snapshot, the type census, the holder walk): the loop rule does not count the stalls they
cause."""
