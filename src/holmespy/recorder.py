"""The flight recorder: an always-on ring of every thread's stack, the seconds before a trigger.

A rule fires after the spike has begun, often after it has ended: a CPU
profile started then shows the calm that followed. So every `1/rate`
seconds the recorder notes each thread's stack (`sys._current_frames()`)
and the CPU time that thread used since the previous tick, read from the
thread's own kernel clock, and keeps the last `seconds` of those notes.
Every event's bundle gets them as `recorder.pb.gz`.

Each sample is weighed twice: by CPU time (a thread blocked in sleep,
select or a lock weighs nothing) and by wall time (every thread, busy or
not, so what the threads were waiting on is there too).

What keeps it cheap enough to leave on:

* A thread whose CPU clock did not move since the previous tick cannot
  have changed its stack: its previous stack is reused without walking it.
  Most threads of a server are idle most of the time.
* Stacks are interned (`stacktable.StackTable`): a tick holds references,
  not copies, and memory follows the window.
* The sampling thread measures its own CPU time; when ticks cost more than
  `BUDGET` of a core (thousands of threads, very deep stacks), it ticks
  less often and says so in `status()`.
"""

from __future__ import annotations

import sys
import threading
import time
import types
import weakref
from collections import deque
from collections.abc import Callable, Sequence

from holmespy.formats.profile import Profile, ValueType
from holmespy.naming import label_name, unknown_thread
from holmespy.stacktable import Stack, StackTable
from holmespy.threadclocks import ThreadClocks

TYPE_CHECKING = False  # typing's, without importing typing: the recorder runs from start-up
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "BUDGET",
    "OWN_THREAD_PREFIX",
    "Recorder",
    "Recording",
    "Tick",
    "recorder_profile",
]

BUDGET = 0.002
"""Share of one core the recorder's ticks may use on average (0.2 %) before it slows down."""

MAX_STRIDE = 10
"""At most this many periods pass between two ticks when ticks are costly."""

TIMED_EVERY = 10
"""One tick in this many is timed, for the budget."""

OWN_THREAD_PREFIX = "holmespy-"
"""holmespy's threads are named so; the recorder leaves them out."""

SAMPLES = ValueType("samples", "count")
CPU_NS = ValueType("cpu", "nanoseconds")
WALL_NS = ValueType("wall", "nanoseconds")

FrameSource = Callable[[], dict[int, types.FrameType]]


class Tick:
    """What the recorder saw at one moment (never changed once made).

    A plain class, not a `typing.NamedTuple`: the recorder is imported at
    its first tick, right after `holmespy.start()`, and typing is one of the
    modules start-up must not load (tests/test_startup.py).
    """

    __slots__ = ("mono", "period_ns", "samples", "wall")

    def __init__(
        self,
        mono: float,
        wall: float,
        period_ns: int,
        samples: tuple[tuple[str, Stack, int], ...],
    ) -> None:
        self.mono = mono
        """`time.monotonic()` of the tick."""
        self.wall = wall
        """Epoch seconds of the tick."""
        self.period_ns = period_ns
        """Wall time this tick stands for: since the previous tick (or one period, for the
        first)."""
        self.samples = samples
        """(thread label, stack, CPU ns the thread used since the previous tick)."""

    def __repr__(self) -> str:
        return f"<Tick mono={self.mono:.3f} samples={len(self.samples)}>"


class Recorder:
    """The ring. `tick()` runs on the sampling thread; `snapshot()` and `status()` anywhere."""

    def __init__(
        self,
        seconds: float,
        rate: float,
        *,
        table: StackTable | None = None,
        clocks: ThreadClocks | None = None,
        current_frames: FrameSource = sys._current_frames,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.seconds = seconds
        self.rate = rate
        self.table = table if table is not None else StackTable()
        self.clocks = clocks if clocks is not None else ThreadClocks()
        self._current_frames = current_frames
        self._wall = wall
        self._ring: deque[Tick] = deque()
        self._open: weakref.WeakSet[Recording] = weakref.WeakSet()
        """Recordings of captures under way: each gets every new tick until it is read.
        Held weakly, so a capture that was dropped before it ran leaks nothing."""
        self._lock = threading.Lock()
        self._prev: dict[int, tuple[int | None, Stack]] = {}
        self._labels: dict[int, str] = {}
        self._skip: frozenset[int] = frozenset()
        self._skip_version = -1
        self._last_mono: float | None = None
        self.samples = 0
        """Samples held in the ring now."""
        self.ticks = 0
        """Ticks taken since start."""
        self.stride = 1
        """Ticks are taken every `stride` periods (more than 1 when they are costly)."""
        self.tick_cpu_ns = 0.0
        """Average CPU time of one tick, ns (smoothed)."""

    @property
    def period(self) -> float:
        """Seconds between two ticks, stride included."""
        return self.stride / self.rate

    def resize(self, seconds: float, rate: float) -> None:
        """A new window or rate (live reconfiguration); what the ring holds is kept."""
        self.seconds, self.rate = seconds, rate
        self.stride = 1

    def tick(self, now: float, frames: dict[int, types.FrameType] | None = None) -> None:
        """Sample every thread once; `now` is `time.monotonic()`, `frames` the threads' frames
        (`sys._current_frames()`) if the caller has them. Runs on the sampling thread."""
        # Its cost is measured on one tick in ten: reading a thread's CPU clock is a
        # system call, and its cold cache makes this thread's every call dear.
        timed = self.ticks % TIMED_EVERY == 0
        began = time.thread_time_ns() if timed else 0
        samples = self._sample(self._current_frames() if frames is None else frames)
        period = self.period if self._last_mono is None else now - self._last_mono
        self._last_mono = now
        tick = Tick(now, self._wall(), max(0, int(period * 1e9)), tuple(samples))
        with self._lock:
            self._ring.append(tick)
            self.samples += len(tick.samples)
            if self._open:  # rare: a capture under way (iterating a WeakSet is not free)
                for recording in self._open:
                    recording.later.append(tick)
        self.ticks += 1
        self._evict(now - self.seconds)
        if timed:
            self._pace(time.thread_time_ns() - began)

    def _sample(self, frames: dict[int, types.FrameType]) -> list[tuple[str, Stack, int]]:
        clocks, table = self.clocks, self.table
        clocks.new_round()
        prev, labels = self._prev, self._labels
        seen: dict[int, tuple[int | None, Stack]] = {}
        out: list[tuple[str, Stack, int]] = []
        skip = self._skip_now()
        for ident, frame in frames.items():
            if ident in skip:
                continue
            version = clocks.refreshes
            cpu = clocks.read(ident)
            if clocks.refreshes != version:  # new threads showed up: some may be holmespy's
                skip = self._skip_now()
                if ident in skip:
                    continue
            before = prev.get(ident)
            if cpu is None or before is None or before[0] is None:
                used = 0
                if cpu is None:
                    labels.pop(ident, None)  # ended, or no clock: its name may be stale
                stack = table.intern(frame)
            elif cpu == before[0]:
                used = 0  # it did not run since the last tick: same stack, no walk
                stack = before[1]
                table.acquire(stack)
            else:
                used = max(0, cpu - before[0])
                stack = table.intern(frame)
            seen[ident] = (cpu, stack)
            label = labels.get(ident)
            if label is None:
                label = labels[ident] = self._label(ident)
            out.append((label, stack, used))
        self._prev = seen
        for ident in [i for i in labels if i not in seen]:
            del labels[ident]
        return out

    def _skip_now(self) -> frozenset[int]:
        threads = self.clocks.threads
        version = self.clocks.refreshes
        if version != self._skip_version:
            self._skip_version = version
            me = threading.get_ident()
            own = {i for i, n in threads.by_ident.items() if n.startswith(OWN_THREAD_PREFIX)}
            self._skip = frozenset({me, *own})
        return self._skip

    def _label(self, ident: int) -> str:
        name = self.clocks.threads.by_ident.get(ident)
        return unknown_thread(ident) if name is None else label_name(name)

    def _evict(self, before: float) -> None:
        ring, release = self._ring, self.table.release
        while ring and ring[0].mono < before:
            with self._lock:
                old = ring.popleft()
                self.samples -= len(old.samples)
            for _, stack, _ in old.samples:
                release(stack)

    def _pace(self, cost_ns: int) -> None:
        # Smoothed over ~5 timed ticks, so one slow tick (a page fault, a new thread) does
        # not change the rate; then as many periods per tick as keep the average in budget.
        if self.tick_cpu_ns == 0.0:
            self.tick_cpu_ns = float(cost_ns)
        self.tick_cpu_ns += (cost_ns - self.tick_cpu_ns) / 5
        share = self.tick_cpu_ns * 1e-9 * self.rate
        self.stride = max(1, min(MAX_STRIDE, -int(-share // BUDGET)))  # ceil, without math

    def clear(self) -> None:
        """Drop everything held (on stop)."""
        with self._lock:
            ticks, self._ring = list(self._ring), deque()
            self.samples = 0
        for tick in ticks:
            for _, stack, _ in tick.samples:
                self.table.release(stack)
        self._prev = {}
        self._last_mono = None

    def snapshot(self) -> list[Tick]:
        """The ticks held now, oldest first (they stay valid after the ring moves on)."""
        with self._lock:
            return list(self._ring)

    def recording(self, trigger_wall: float) -> Recording:
        """The ring as of a trigger; it also collects every later tick until it is read."""
        with self._lock:
            recording = Recording(self, list(self._ring), trigger_wall)
            self._open.add(recording)
        return recording

    def _close(self, recording: Recording) -> list[Tick]:
        with self._lock:
            self._open.discard(recording)
            return list(recording.later)

    def status(self) -> dict[str, Any]:
        with self._lock:
            held = len(self._ring)
            samples = self.samples
        return {
            "seconds": self.seconds,
            "rate_hz": self.rate,
            "effective_hz": round(self.rate / self.stride, 2),
            "ticks_held": held,
            "samples_held": samples,
            "stacks_interned": self.table.stack_count,
            "frames_interned": self.table.frame_count,
            "tick_cpu_us": round(self.tick_cpu_ns / 1000, 1),
        }


class Recording:
    """The recorder's ticks for one event: those held at the trigger, then every later one."""

    __slots__ = ("__weakref__", "held", "later", "recorder", "trigger_wall")

    def __init__(self, recorder: Recorder, held: list[Tick], trigger_wall: float) -> None:
        self.recorder = recorder
        self.held = held
        self.later: list[Tick] = []
        self.trigger_wall = trigger_wall

    def ticks(self) -> list[Tick]:
        """Every tick from the window before the trigger up to now; it stops collecting."""
        return self.held + self.recorder._close(self)


def recorder_profile(ticks: Sequence[Tick], trigger_wall: float, rate: float) -> Profile:
    """The ticks as a profile: samples, CPU ns and wall ns per (thread, stack, second).

    The `second` label is the whole second relative to the trigger, counted
    like a launch: `T-3` covers 3 to 2 seconds before it, `T+0` and later are
    during the capture; `go tool pprof -tagfocus 'second=^T-3$'` shows one.
    (Not a bare number: pprof would read `-3` as a numeric range.)
    """
    profile = Profile(
        sample_types=(SAMPLES, CPU_NS, WALL_NS),
        time_nanos=int(ticks[0].wall * 1e9) if ticks else 0,
        duration_nanos=int((ticks[-1].wall - ticks[0].wall) * 1e9) if ticks else 0,
        period_type=WALL_NS,
        period=int(1e9 / rate),
        default_sample_type=CPU_NS.type,
    )
    acc: dict[tuple[str, Stack, int], list[int]] = {}
    for tick in ticks:
        second = int((tick.wall - trigger_wall) // 1)  # floor, without math
        for label, stack, cpu in tick.samples:
            entry = acc.get((label, stack, second))
            if entry is None:
                acc[(label, stack, second)] = [1, cpu, tick.period_ns]
            else:
                entry[0] += 1
                entry[1] += cpu
                entry[2] += tick.period_ns
    for (label, stack, second), (count, cpu, wall) in acc.items():
        moment = f"T-{-second}" if second < 0 else f"T+{second}"
        profile.add(stack.frames, (count, cpu, wall), thread=label, second=moment)
    profile.comments.append(
        f"holmespy flight recorder: every thread's stack at {rate:g} Hz, weighted by the CPU "
        "time each thread used since the previous tick (cpu) and by wall time (wall)"
    )
    return profile
