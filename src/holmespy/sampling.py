"""One watcher tick's measurements: CPU %, RSS %, threads, asyncio tasks, memory after GC,
and the longest event-loop stall (from the loop watchdog).

Everything the OS answers comes from `/proc` through kept descriptors; the
limits that turn raw numbers into percentages come from `limits.py` once at
start. Counting tasks walks every task of every loop, so on a process with
very many tasks it is done every few ticks instead of every tick, keeping the
tick's average cost bounded.
"""

from __future__ import annotations

import sys
import time

from holmespy.lazyimport import importing
from holmespy.procstat import ProcStatReader

TYPE_CHECKING = False  # typing's, without importing typing at start()
if TYPE_CHECKING:
    from collections.abc import Callable

    from holmespy.gcwatch import GCWatch
    from holmespy.limits import Limits

TASK_BUDGET_SECONDS = 0.001
"""Average time per tick that task counting may take before it is done less often."""
MAX_TASK_STRIDE = 10


class Sample:
    """One tick's measurements (a plain slotted class: one is built per tick)."""

    __slots__ = ("cpu", "gcheap", "loop", "mem", "rss_bytes", "tasks", "threads", "time")
    time: float
    """Epoch seconds."""
    cpu: float | None
    """Process CPU % of usable cores since the previous tick (None on the first tick)."""
    mem: float
    """RSS % of the memory limit."""
    rss_bytes: int
    threads: int
    tasks: int | None
    """Tasks over all running loops, or None on ticks that skip counting."""
    gcheap: tuple[float, ...]
    """RSS % after each full GC since the previous tick."""
    loop: float | None
    """Longest event-loop stall since the previous tick, ms (None: no loop watched)."""

    def __init__(
        self,
        time: float,
        cpu: float | None,
        mem: float,
        rss_bytes: int,
        threads: int,
        tasks: int | None,
        gcheap: tuple[float, ...] = (),
        loop: float | None = None,
    ) -> None:
        self.time = time
        self.cpu = cpu
        self.mem = mem
        self.rss_bytes = rss_bytes
        self.threads = threads
        self.tasks = tasks
        self.gcheap = gcheap
        self.loop = loop

    def __repr__(self) -> str:
        return f"Sample({self.as_dict()!r}, gcheap={self.gcheap!r})"

    def as_dict(self) -> dict[str, object]:
        return {
            "time": self.time,
            "cpu": self.cpu,
            "mem": self.mem,
            "rss_bytes": self.rss_bytes,
            "threads": self.threads,
            "tasks": self.tasks,
            "loop": self.loop,
        }


class Sampler:
    def __init__(
        self,
        limits: Limits,
        *,
        stat: ProcStatReader | None = None,
        gc_watch: GCWatch | None = None,
        count_tasks: bool = True,
        loop_stall: Callable[[], float | None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        perf_counter: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.limits = limits
        self.stat = stat or ProcStatReader()
        self.gc_watch = gc_watch
        self.loop_stall = loop_stall
        self.count_tasks = count_tasks
        self._count: Callable[[], int] | None = None  # loops.count_tasks, once asyncio is in
        self.task_stride = 1
        self.task_seconds = 0.0
        self._monotonic, self._perf_counter = monotonic, perf_counter
        self._skip = 0
        self._last: tuple[float, float] | None = None  # (monotonic, cpu seconds)

    def sample(self) -> Sample:
        now, wall = self._monotonic(), time.time()
        cpu_seconds, threads, rss_bytes = self.stat.read_fields()
        cpu: float | None = None
        last = self._last
        if last is not None:
            elapsed = now - last[0]
            if elapsed > 0:
                used = cpu_seconds - last[1]
                cpu = max(0.0, 100.0 * used / (elapsed * self.limits.cpu_cores))
        self._last = (now, cpu_seconds)
        mem_limit = self.limits.mem_bytes
        gc_watch = self.gc_watch
        gcheap: tuple[float, ...] = ()
        if gc_watch is not None and gc_watch.samples:
            gcheap = tuple(100.0 * rss / mem_limit for _, rss in gc_watch.drain())
        return Sample(
            wall,
            cpu,
            100.0 * rss_bytes / mem_limit,
            rss_bytes,
            threads,
            self._tasks(),
            gcheap,
            self.loop_stall() if self.loop_stall is not None else None,
        )

    def _tasks(self) -> int | None:
        if not self.count_tasks:
            return None
        count_tasks = self._count
        if count_tasks is None:
            # No asyncio imported, no task anywhere: `holmespy.loops` (and with it
            # asyncio, ~40 ms) is imported only once the host has imported asyncio.
            if "asyncio" not in sys.modules:
                return 0
            with importing:  # on the watcher's thread: see holmespy.lazyimport
                from holmespy import loops

            if not loops.tasks_supported():
                self.count_tasks = False
                return None
            count_tasks = self._count = loops.count_tasks
        if self._skip > 0:
            self._skip -= 1
            return None
        start = self._perf_counter()
        count = count_tasks()
        self.task_seconds = self._perf_counter() - start
        # Spread an expensive count over several ticks rather than let it dominate each one.
        ticks = self.task_seconds / TASK_BUDGET_SECONDS
        stride = int(ticks) + (ticks > int(ticks))  # math.ceil, without math at start()
        self.task_stride = min(MAX_TASK_STRIDE, max(1, stride))
        self._skip = self.task_stride - 1
        return count

    def close(self) -> None:
        self.stat.close()
