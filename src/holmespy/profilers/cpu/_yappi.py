"""yappi: exact per-function CPU time, at a price. Opt-in only.

yappi hooks every call and return of every thread, so the host runs 8-18x
slower while it records (REFERENCE; CPU clock is the costly one), and PyPI
1.7.6 leaks coroutines (yappi#217). holmespy never picks it by itself.

yappi measures functions, not stacks: for each function it knows its own
(self) time and, per caller, how much of it was spent when called from that
caller. The profile says exactly that and no more. Each function of each
thread becomes one sample per known caller, whose stack is two frames
(the function, then that caller) and whose values are the calls and self CPU
time spent under that caller; self time yappi could not attribute to a
caller (a thread's first function, code entered before recording started, a
generator resumed by a builtin) becomes a one-frame sample. Summed per
innermost frame this gives each function's exact self time; deeper stacks
would have to be invented. Frames carry the function's first line (yappi
does not record the line being run).

yappi sees calls and returns only: a function that was entered before the
window and neither returns nor calls Python code during it (a thread
spinning in one long loop) does not show up at all. The sampling engines
have no such blind spot.

The host's own use of yappi is left alone: if yappi is already running or
holds stats, the engine refuses. Its clock type and `threading`'s profile
hook (which `yappi.stop()` resets) are put back afterwards.
"""

from __future__ import annotations

import importlib
import threading
import time
from typing import Any

from holmespy.formats.profile import Frame, Profile, ValueType
from holmespy.lazyimport import importing
from holmespy.naming import ModuleNames, ThreadTable
from holmespy.profilers.cpu._common import CPU_NS, EngineFailed, Stacks, add_stacks

CALLS = ValueType("calls", "count")


def profile_yappi(
    seconds: float, exclude: frozenset[int], deadline: float
) -> tuple[Profile, dict[str, Any]]:
    """Record every thread with yappi's CPU clock for `seconds`; raises EngineFailed."""
    try:
        with importing:  # on a capture lane's thread: see holmespy.lazyimport
            yappi: Any = importlib.import_module("yappi")
    except ImportError as exc:
        raise EngineFailed(f"yappi is not installed ({exc}); pip install holmespy[yappi]") from exc
    if yappi.is_running():
        raise EngineFailed("yappi is already running in this process (the host's); left it alone")
    if not yappi.get_func_stats().empty():
        raise EngineFailed("yappi holds stats from the host's own profiling; left them alone")
    threads = ThreadTable()
    threads.update()
    names = ModuleNames()
    old_clock = yappi.get_clock_type()
    old_hook = threading.getprofile()
    time_nanos = time.time_ns()
    started = time.monotonic()
    try:
        yappi.set_clock_type("cpu")
        yappi.start(builtins=False, profile_threads=True)
        try:
            time.sleep(max(0.0, min(started + seconds, deadline) - time.monotonic()))
        finally:
            yappi.stop()
        elapsed = time.monotonic() - started
        threads.update()
        stacks, facts = _stacks(yappi, threads, names, exclude)
    finally:
        yappi.clear_stats()
        yappi.set_clock_type(old_clock)
        threading.setprofile(old_hook)
    profile = Profile(
        sample_types=(CALLS, CPU_NS),
        time_nanos=time_nanos,
        duration_nanos=int(elapsed * 1e9),
        default_sample_type=CPU_NS.type,
        comments=[
            "yappi (CPU clock): exact self CPU time per function and immediate caller; "
            "stacks are [function, caller], not full call stacks"
        ],
    )
    add_stacks(profile, stacks)
    facts["seconds"] = round(elapsed, 3)
    facts["clock"] = "cpu"
    facts["cost"] = "deterministic profiling: the host ran several times slower meanwhile"
    return profile, facts


def _stacks(
    yappi: Any, threads: ThreadTable, names: ModuleNames, exclude: frozenset[int]
) -> tuple[Stacks, dict[str, Any]]:
    stacks: Stacks = {}
    frames: dict[str, Frame] = {}

    def frame_of(stat: Any) -> Frame:
        frame = frames.get(stat.full_name)
        if frame is None:
            filename = str(stat.module)
            line = int(stat.lineno)
            frame = Frame(names.qualify(str(stat.name), filename), filename, line, line)
            frames[stat.full_name] = frame
        return frame

    skipped = 0
    functions = 0
    for ctx in yappi.get_thread_stats():
        if ctx.tid in exclude:
            skipped += 1
            continue
        thread = threads.label_for_ident(ctx.tid)
        # Per context: unfiltered get_func_stats() merges all threads, and
        # its ctx_id argument treats context 0 (the main thread) as "all".
        stats = list(yappi.get_func_stats(filter={"ctx_id": ctx.id}))
        by_name = {stat.full_name: stat for stat in stats}
        callers: dict[str, list[tuple[Any, Any]]] = {}
        for caller in stats:
            for edge in caller.children:
                callers.setdefault(edge.full_name, []).append((caller, edge))
        for stat in stats:
            functions += 1
            own = frame_of(stat)
            left_ns = int(stat.tsub * 1e9)
            left_calls = int(stat.ncall)
            for caller, edge in callers.get(stat.full_name, ()):
                cpu_ns = min(int(edge.tsub * 1e9), max(0, left_ns))
                if cpu_ns <= 0:
                    continue
                parent = by_name.get(caller.full_name, caller)
                _add(stacks, thread, (own, frame_of(parent)), int(edge.ncall), cpu_ns)
                left_ns -= cpu_ns
                left_calls -= int(edge.ncall)
            if left_ns > 0:
                _add(stacks, thread, (own,), max(0, left_calls), left_ns)
    return stacks, {"threads_excluded": skipped, "functions": functions}


def _add(stacks: Stacks, thread: str, stack: tuple[Frame, ...], calls: int, cpu_ns: int) -> None:
    entry = stacks.setdefault((thread, stack), [0, 0])
    entry[0] += calls
    entry[1] += cpu_ns
