"""Every thread's CPU time, read from the kernel: what a CPU profile's total must agree with.

A sampling engine only sees stacks; what a thread really spent on a core comes
from its own CPU clock. Read at the start and the end of a window, the clocks
give each thread's CPU time over it, which the py-spy engine uses to weigh its
samples (py-spy also counts a thread that only waits for the GIL) and both
engines report next to their totals.
"""

from __future__ import annotations

import os
import time
from collections.abc import Collection

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
    try:
        names = os.listdir(_TASKS)
    except OSError:
        return {}
    out: dict[int, int] = {}
    for name in names:
        if not name.isdigit():
            continue
        tid = int(name)
        if tid in exclude:
            continue
        try:
            out[tid] = time.clock_gettime_ns(clock_from_native_id(tid))
        except OSError:
            continue
    return out


def used_between(before: dict[int, int], after: dict[int, int]) -> dict[int, int]:
    """CPU each thread used between two readings; a thread born in between counts from zero."""
    return {tid: max(0, ns - before.get(tid, 0)) for tid, ns in after.items()}
