"""Every thread's CPU time, read from the kernel: what a CPU profile's total must agree with.

A sampling engine only sees stacks; what a thread really spent on a core comes
from its own CPU clock. Read at the start and the end of a window, the clocks
give each thread's CPU time over it, which the py-spy engine uses to weigh its
samples (py-spy also counts a thread that only waits for the GIL) and both
engines report next to their totals. The flight recorder reads them at every
tick, from start-up on: hence a module outside `holmespy.profilers`.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Collection

from holmespy.naming import ThreadTable

_TASKS = "/proc/self/task"


def clock_from_native_id(native_id: int) -> int:
    """The clockid of thread `native_id`'s CPU clock (Linux; any thread of this process).

    Linux encodes a thread's CPU clock as (~tid << 3) | CPUCLOCK_PERTHREAD |
    CPUCLOCK_SCHED, which is what glibc's pthread_getcpuclockid returns.
    Building it from the kernel tid avoids handing glibc the pthread_t of a
    thread that may have just exited; a dead tid only gives EINVAL.
    """
    return ((~native_id) << 3) | 6


def thread_cpu_ns(exclude: Collection[int] = ()) -> dict[int, int]:
    """tid -> CPU nanoseconds used so far, for every thread of this process but `exclude` (tids).

    {} where /proc is not readable. A thread that ends while it is read is left out.
    """
    return cpu_ns_of(task_ids(exclude))


def task_ids(exclude: Collection[int] = ()) -> list[int]:
    """The tids of this process's threads but `exclude`; [] where /proc is not readable.

    Listing /proc lets other threads take the GIL: a caller that must read the
    clocks right after something else lists first (`cpu_ns_of` only reads clocks).
    """
    try:
        names = os.listdir(_TASKS)
    except OSError:
        return []
    return [int(name) for name in names if name.isdigit() and int(name) not in exclude]


def cpu_ns_of(tids: Collection[int]) -> dict[int, int]:
    """tid -> CPU nanoseconds used so far, for each of `tids` still alive."""
    out: dict[int, int] = {}
    for tid in tids:
        try:
            out[tid] = time.clock_gettime_ns(clock_from_native_id(tid))
        except OSError:
            continue
    return out


def used_between(before: dict[int, int], after: dict[int, int]) -> dict[int, int]:
    """CPU each thread used between two readings; a thread born in between counts from zero."""
    return {tid: max(0, ns - before.get(tid, 0)) for tid, ns in after.items()}


class ThreadClocks:
    """CPU nanoseconds of a thread, by its `threading` ident; never raises.

    What the in-process samplers (the triggered CPU sampler and the flight
    recorder) read at each tick. Clocks are built once per thread and kept; a thread that ended (its
    clock read fails) is forgotten, so a later thread reusing its ident gets
    a clock of its own. The thread table is refreshed at most once per
    `new_round()` (one `threading.enumerate()` per sampler tick), when an
    ident it does not know shows up.
    """

    def __init__(self, threads: ThreadTable | None = None) -> None:
        self.threads = threads if threads is not None else ThreadTable()
        self._clocks: dict[int, int] = {}
        self._round = 0
        self._refreshed = -1
        self.refreshes = 0
        """How many times the thread table was refreshed (its names may have changed)."""
        self._by_native = sys.platform.startswith("linux")
        self._pthread_clock: Callable[[int], int] | None = getattr(
            time, "pthread_getcpuclockid", None
        )

    def new_round(self) -> None:
        """Allow one more refresh of the thread table (call once per sampler tick)."""
        self._round += 1

    def read(self, ident: int) -> int | None:
        """The thread's CPU time in ns, or None when it has no readable clock (or ended)."""
        clock = self._clocks.get(ident)
        if clock is None:
            clock = self._clock_for(ident)
            if clock is None:
                return None
            self._clocks[ident] = clock
        try:
            return time.clock_gettime_ns(clock)
        except OSError:  # the thread ended (or its ident now belongs to a new thread)
            del self._clocks[ident]
            return None

    def forget(self, ident: int) -> None:
        self._clocks.pop(ident, None)

    def _clock_for(self, ident: int) -> int | None:
        if self._refreshed != self._round:
            self._refreshed = self._round
            self.threads.update()
            self.refreshes += 1
        native = self.threads.native_of.get(ident) if self._by_native else None
        if native is not None:
            return clock_from_native_id(native)
        if self._pthread_clock is None:
            return None
        try:
            # A thread `threading` does not know (started with _thread or from C):
            # it is in sys._current_frames(), so it was alive a moment ago.
            return self._pthread_clock(ident)
        except OSError:
            return None
