"""The event-loop watchdog: notices a loop that stopped running callbacks, and catches why.

The most common asyncio outage is a handler that makes a synchronous call
(`time.sleep`, a blocking database driver, `requests`) inside `async def`.
The loop then runs nothing else until the call returns, yet the process
burns no CPU, so no CPU, memory, thread or task rule ever sees it.

How it is seen here, every `CHECK_EVERY` (100 ms) on the sampling thread
the flight recorder already wakes (`check()`), for every running loop found
by `loops.running_loops()` on the watcher's ticks:

* **An idle loop is left alone.** A loop waiting in its selector's
  `select()` (`loops.waiting_for_events`, read from the loop thread's
  stack) has nothing to do: it is alive now, and it is not woken up.
* **A busy loop gets a heartbeat.** Otherwise the watchdog asks the loop,
  through the thread-safe `call_soon_threadsafe`, to run a callback that
  only notes when it ran. A healthy busy loop runs it within one iteration
  (the loop is awake anyway, so this costs it a few microseconds); it is
  not a task, so the task rule and `tasks.txt` never see it.
* **A loop that stays silent is stalled.** When a loop has been neither
  idle nor answered a heartbeat for longer than the rule's `min`, the
  watchdog samples the loop thread's stack `STALL_HZ` times a second while
  it stays so (at most `MAX_STALL_SAMPLES` per stall): the evidence is the
  blocking call itself, caught in the act, with the handler that made it.
  The thread wakes for that deadline exactly, so a stall is seen at `min`.
* **The rule's value** (`take()`, on each watcher tick) is the longest
  silence since the previous tick, in milliseconds, counting a stall still
  going on; 0 when every heartbeat ran in time (within `LATE`).

A silence counts from the last moment the loop was known alive (seen idle,
or running a heartbeat), which is at most one check (100 ms) before the
blocking call began: a stall reads up to 100 ms longer than the call. Stalls
that overlap a holmespy capture known to pause the whole process (the heap
snapshot) are kept in `loop.txt` but not counted, so holmespy never
reports itself. Nothing here raises into a loop.

Only loops this process runs are watched. After `fork()` the child holds
copies of the parent's loops, and each still says it runs (its `_thread_id`
is set): a loop of another thread of the parent, whose thread the child does
not have, and the loop the forking thread was inside (multiprocessing's fork
from a handler: the child runs its job there and never returns to the loop).
Neither would ever answer a heartbeat, so each would read as a stall from the
fork on. The first kind is told by its thread, the second is noted at the fork
(`loopstack.note_inherited_loop`, registered at start-up, before this module
is imported) and ignored until it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import math
import sys
import threading
import time
import types
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from holmespy import loops, loopstack, runqueue
from holmespy.stacktable import Stack, StackTable

__all__ = [
    "CHECK_EVERY",
    "LATE",
    "MAX_STALL_SAMPLES",
    "STALL_HZ",
    "Heartbeat",
    "StallView",
    "Watchdog",
]

CHECK_EVERY = 0.1
"""Seconds between two looks at every loop (stalls are timed to within this)."""

LATE = 0.05
"""A heartbeat that ran more than this after it was asked for makes a late gap (a busy
loop's own iterations stay well under it)."""

STALL_HZ = 50.0
"""Samples per second of a stalled loop's thread."""

MAX_STALL_SAMPLES = 500
"""Samples kept per stall (10 s at STALL_HZ); a longer stall is timed but no longer sampled."""

KEPT_STALLS = 16
"""Finished stalls kept for the next event's loop.txt, newest first; older ones are dropped."""

MAX_LATE = 256
"""Late gaps kept until the watcher reads them."""

CALM_POLL = 0.1
"""How often a capture waiting for a stall to end asks whether it should stop waiting."""

KEPT_PAUSES = 8
"""holmespy's own process-pausing captures remembered, to excuse the stalls they cause."""

WATCH_CPU_WAIT_FOR = 10.0
"""Seconds after a late heartbeat during which each heartbeat notes the loop thread's CPU
wait when it is asked for, not one look later (a machine that was overloaded still is)."""

LoopLister = Callable[[], list[loops.LoopInfo]]
FrameSource = Callable[[], dict[int, types.FrameType]]
IdleTest = Callable[[types.FrameType | None], bool]
LoopOnStack = Callable[[types.FrameType | None], Any]
CpuWait = Callable[[int], float | None]
OwnCpuWait = Callable[[], float | None]


class Heartbeat:
    """A callback one loop is asked to run, from another thread, and when it last ran it.

    `pending` (when the callback was asked for) is written by the watchdog
    only; `answer` (asked for, ran) by the loop only, in one assignment: no
    lock is needed between them.
    """

    __slots__ = ("_context", "_loop", "answer", "clock", "pending")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        try:
            self._loop: Callable[[], asyncio.AbstractEventLoop | None] = weakref.ref(loop)
        except TypeError:  # a loop class without weak references: held for as long as watched
            self._loop = lambda: loop
        self.clock = clock
        self.pending: float | None = None
        self.answer: tuple[float, float] = (math.nan, math.nan)
        # It runs in a context of its own: the host's context variables are
        # neither copied for it nor visible to it.
        self._context = contextvars.Context()

    def post(self, now: float) -> None:
        """Ask the loop to run the callback (from any thread); raises if the loop is closed."""
        loop = self._loop()
        if loop is None:
            raise RuntimeError("the loop is gone")
        loop.call_soon_threadsafe(self.beat, now, context=self._context)
        self.pending = now

    def beat(self, asked: float) -> None:
        """Runs in the loop: note when."""
        self.answer = (asked, self.clock())

    def answered(self) -> float | None:
        """When the pending callback ran, if it has."""
        asked, ran = self.answer
        return ran if self.pending is not None and asked == self.pending else None


@dataclass(slots=True)
class _Stall:
    start: float
    detected: float
    end: float | None = None
    taken: int = 0
    last_sample: float = 0.0
    capped: bool = False
    no_frames: int = 0
    starved: float = 0.0
    samples: dict[Stack, list[int]] | None = None
    """Stack -> [samples, wall ns]."""


@dataclass(frozen=True, slots=True)
class StallView:
    """One stall as a capture writes it: copies, safe to read on any thread."""

    loop: str
    thread: str | None
    thread_id: int | None
    start_wall: float
    """Epoch seconds of the last moment the loop was known alive before the stall."""
    seconds: float
    """Length so far (ongoing) or in all (ended), from that moment."""
    ended: bool
    detected_after: float
    """Seconds from the start to when the watchdog saw it (the rule's min, plus a little)."""
    samples: tuple[tuple[Stack, int, int], ...]
    """(stack, samples, wall ns), most samples first."""
    sample_count: int
    capped: bool
    excused: bool
    """It overlapped a holmespy capture that pauses the process: not counted by the rule."""
    no_frames: int = 0
    """Samples that found no Python frame on the loop's thread."""
    starved: float = 0.0
    """Seconds of it the loop's thread was ready to run but waited for a CPU (the machine's
    fault, not the loop's): not counted by the rule."""


class _Watched:
    __slots__ = (
        "alive",
        "alive_at_post",
        "cpu_wait_base",
        "heartbeat",
        "label",
        "loop",
        "overloaded_until",
        "running_since",
        "stall",
        "starved",
        "thread",
        "thread_id",
    )

    def __init__(self, info: loops.LoopInfo, heartbeat: Heartbeat) -> None:
        self.loop: Callable[[], Any] = heartbeat._loop
        self.heartbeat = heartbeat
        self.label = f"{type(info.loop).__qualname__} at {id(info.loop):#x}"
        self.thread_id = info.thread_id
        self.thread = info.thread_name
        self.running_since: float | None = None
        self.alive = 0.0
        """The last time the loop was known alive: seen idle, or running a heartbeat."""
        self.alive_at_post = 0.0
        self.stall: _Stall | None = None
        self.cpu_wait_base: float | None = None
        """The thread's CPU wait when its heartbeat was first seen late in this silence."""
        self.starved = 0.0
        """Seconds of this silence the thread waited for a CPU, since `cpu_wait_base`."""
        self.overloaded_until = -math.inf
        """Until then, each heartbeat notes the CPU wait when it is asked for."""

    def silence(self, now: float) -> float:
        """Seconds the loop ran nothing of its own accord: silent, less its wait for a CPU."""
        return max(0.0, now - self.alive - self.starved)

    def revived(self, at: float) -> None:
        """The loop was seen alive at `at`: a new silence starts, with no CPU wait yet."""
        self.alive = max(self.alive, at)
        self.cpu_wait_base = None
        self.starved = 0.0


class Watchdog:
    """Heartbeats for every running loop; stall detection and sampling; the loop rule's value.

    Threads: `discover()` and `take()` run on the watcher thread, `check()`
    on the sampling thread, `stalls()` on the capture thread. Only
    `check()` and `stop()` touch the stack table.
    """

    def __init__(
        self,
        threshold: float,
        *,
        table: StackTable | None = None,
        running_loops: LoopLister = loops.running_loops,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        current_frames: FrameSource = sys._current_frames,
        is_idle: IdleTest = loops.waiting_for_events,
        loop_on_stack: LoopOnStack = loopstack.loop_on_stack,
        cpu_wait: CpuWait = runqueue.waited,
        own_cpu_wait: OwnCpuWait = runqueue.own_wait,
        check_every: float = CHECK_EVERY,
    ) -> None:
        self.threshold = threshold
        """Seconds of silence after which a loop is stalled and sampled: the rule's min."""
        self.table = table if table is not None else StackTable()
        self.check_every = check_every
        self._running_loops = running_loops
        self._clock = clock
        self._wall = wall
        self._current_frames = current_frames
        self._is_idle = is_idle
        self._loop_on_stack = loop_on_stack
        self._cpu_wait = cpu_wait
        self._own_cpu_wait = own_cpu_wait
        self._own_waited: float | None = None
        """The sampling thread's own CPU wait at its previous look."""
        self._lock = threading.Lock()
        self._calm = threading.Condition(self._lock)
        """Notified whenever a stall ends."""
        self._watched: dict[int, _Watched] = {}
        self._stalls: deque[tuple[_Watched, _Stall]] = deque()
        self._late: deque[float] = deque(maxlen=MAX_LATE)
        """Seconds of each silence a late heartbeat ended, until `take()` reads them."""
        self._pauses: deque[list[float]] = deque(maxlen=KEPT_PAUSES)
        self.stalls_seen = 0
        self.heartbeats = 0
        self.longest = 0.0
        self.stopped = False

    # -- the watcher thread --

    def discover(self) -> int:
        """Watch every running loop not yet watched; returns how many were new."""
        if self.stopped:
            return 0
        new = 0
        frames: dict[int, types.FrameType] | None = None
        inherited = loopstack.inherited_still_running()
        try:
            for info in self._running_loops():
                if not info.running or id(info.loop) in inherited:
                    continue
                with self._lock:
                    watched = self._watched.get(id(info.loop))
                    if watched is not None and watched.loop() is info.loop:
                        if info.thread_id is not None:
                            watched.thread_id, watched.thread = info.thread_id, info.thread_name
                        continue
                if info.thread_id is not None:
                    # Its thread must be running it now: after a fork, the parent's loops
                    # name threads the child does not have, whose idents its own threads
                    # may reuse.
                    if frames is None:
                        frames = self._current_frames()
                    if self._loop_on_stack(frames.get(info.thread_id)) is not info.loop:
                        continue
                with self._lock:
                    heartbeat = Heartbeat(info.loop, clock=self._clock)
                    self._watched[id(info.loop)] = _Watched(info, heartbeat)
                    new += 1
        finally:
            del frames  # other threads' frames keep their locals alive
        return new

    def take(self) -> float | None:
        """The longest silence, in ms, since the previous call (None while no loop is watched)."""
        now = self._clock()
        with self._lock:
            if not self._watched:
                return None
            longest = 0.0
            while self._late:
                longest = max(longest, self._late.popleft())
            for watched in self._watched.values():
                pending = watched.heartbeat.pending
                if watched.running_since is None or pending is None or now - pending <= LATE:
                    continue
                if not self._excused(watched.alive, now):
                    longest = max(longest, watched.silence(now))
        return round(longest * 1000.0, 3)

    @contextlib.contextmanager
    def excused(self) -> Iterator[None]:
        """Mark a holmespy capture that pauses the process: stalls overlapping it don't count."""
        pause = [self._clock(), math.inf]
        with self._lock:
            self._pauses.append(pause)
        try:
            yield
        finally:
            pause[1] = self._clock()

    def _excused(self, start: float, end: float) -> bool:
        return any(p_start < end and start < p_end for p_start, p_end in self._pauses)

    # -- the sampling thread --

    def check(self, now: float, frames: dict[int, types.FrameType] | None = None) -> float:
        """Look at every loop, sample the stalled ones; returns when to check next (monotonic).

        `frames` is `sys._current_frames()` when the caller already has it.
        """
        with self._lock:
            if not self._watched:
                return math.inf
            if frames is None:
                frames = self._current_frames()
            due = now + self.check_every
            kept_off = self._kept_off_cpu()
            stalled: list[_Watched] = []
            for key, watched in list(self._watched.items()):
                deadline = self._look(key, watched, now, frames, kept_off)
                if deadline is None:
                    stalled.append(watched)
                else:
                    due = min(due, deadline)
            if stalled:
                due = min(due, self._sample(stalled, now, frames))
        return due

    def _kept_off_cpu(self) -> float:
        """Seconds this (the sampling) thread waited for a CPU since its previous look."""
        try:
            waited = self._own_cpu_wait()
        except Exception:  # a reading is a bonus: without it a late look blames the loop
            waited = None
        before, self._own_waited = self._own_waited, waited
        if waited is None or before is None:
            return 0.0
        return max(0.0, waited - before)

    def _look(
        self,
        key: int,
        watched: _Watched,
        now: float,
        frames: dict[int, types.FrameType],
        kept_off: float = 0.0,
    ) -> float | None:
        """One loop: its deadline (when its silence would reach min), or None when stalled."""
        loop = watched.loop()
        if loop is None or _closed(loop):
            self._forget(key, watched, now)
            return math.inf
        if not _running(loop):
            watched.running_since = None
            watched.heartbeat.pending = None  # asked of a loop that stopped: it proves nothing
            if watched.stall is not None:  # it stopped: what blocked it has returned
                self._finish(watched, now)
            return math.inf
        if watched.running_since is None:
            watched.running_since = now
            watched.revived(now)
        beat = watched.heartbeat
        asked, ran = beat.pending, beat.answered()
        if asked is not None and ran is not None:
            beat.pending = None
            if ran - asked > LATE and not self._excused(watched.alive_at_post, ran):
                self._late.append(max(0.0, ran - watched.alive_at_post - watched.starved))
            if ran > watched.alive:
                if watched.stall is not None:
                    self._finish(watched, ran)  # it ran what it was asked: the stall ended
                watched.revived(ran)
        frame = frames.get(watched.thread_id) if watched.thread_id is not None else None
        if self._is_idle(frame):
            if watched.stall is not None:
                self._finish(watched, now)
            watched.revived(now)
            return math.inf  # nothing to ask it, nothing to sample
        if beat.pending is None:
            try:
                beat.post(now)
            except Exception:  # closed since the look above, or not a loop one can ask
                self._forget(key, watched, now)
                return math.inf
            self.heartbeats += 1
            # A look that came late because this thread waited for a CPU (an overloaded
            # machine) knows nothing of the loop meanwhile: that wait is not the loop's,
            # though at least one look of the gap may be silence. A look kept late by the
            # GIL (a C call that blocks holding it) is the loop's doing and counts whole.
            watched.alive = max(
                watched.alive, min(now - self.check_every, watched.alive + kept_off)
            )
            watched.alive_at_post = watched.alive
            if now < watched.overloaded_until:
                self._note_cpu_wait(watched, now)
        elif now - beat.pending > LATE:
            self._note_cpu_wait(watched, now)
            watched.overloaded_until = now + WATCH_CPU_WAIT_FOR
        if watched.stall is not None:
            watched.stall.starved = watched.starved
            return None
        silence = watched.silence(now)
        if silence >= self.threshold:
            # The first sample stands for one sampling period, like every later one.
            watched.stall = _Stall(
                start=watched.alive,
                detected=now,
                last_sample=now - 1 / STALL_HZ,
                starved=watched.starved,
            )
            self.stalls_seen += 1
            return None
        deadline = watched.alive + watched.starved + self.threshold
        if watched.starved > 0.0:
            # A CPU wait that grows between looks pushes the deadline on by as much: look
            # again no sooner than a sampling period, not at ever closer wake-ups.
            deadline = max(deadline, now + 1.0 / STALL_HZ)
        return deadline

    def _note_cpu_wait(self, watched: _Watched, now: float) -> None:
        """How much of the silence the thread spent waiting for a CPU.

        Read once a heartbeat is late, so a healthy machine pays nothing: the first
        late heartbeat counts from its first late look (up to one look of an overloaded
        machine's wait still reads as silence), later ones, for `WATCH_CPU_WAIT_FOR`,
        from when they were asked for. A thread that sleeps (a blocking call) does not
        wait for a CPU, so a real stall loses nothing.
        """
        if watched.thread_id is None:
            return
        try:
            waited = self._cpu_wait(watched.thread_id)
        except Exception:  # a reading is a bonus: without it the silence counts whole
            return
        if waited is None:
            return
        if watched.cpu_wait_base is None:
            watched.cpu_wait_base = waited
        else:
            watched.starved = max(watched.starved, waited - watched.cpu_wait_base)

    def _sample(
        self, stalled: list[_Watched], now: float, frames: dict[int, types.FrameType]
    ) -> float:
        # A stall just sampled (two wake-ups at once: a deadline and a look) is not sampled
        # again so soon: each sample stands for one sampling period.
        uncapped = [w.stall for w in stalled if w.stall is not None and not w.stall.capped]
        if not uncapped:
            return now + self.check_every  # capped: only watch for the end
        too_soon = now - 0.5 / STALL_HZ
        for watched in stalled:
            stall = watched.stall
            if stall is None or stall.capped or stall.last_sample > too_soon:
                continue
            frame = frames.get(watched.thread_id) if watched.thread_id is not None else None
            wall_ns = int(max(0.0, now - stall.last_sample) * 1e9)
            stall.last_sample = now
            stall.taken += 1
            if stall.taken >= MAX_STALL_SAMPLES:
                stall.capped = True
            if frame is None:
                stall.no_frames += 1
                continue
            stack = self.table.intern(frame)
            if stall.samples is None:
                stall.samples = {}
            entry = stall.samples.get(stack)
            if entry is None:
                stall.samples[stack] = [1, wall_ns]
            else:
                self.table.release(stack)  # the stall holds one reference per stack
                entry[0] += 1
                entry[1] += wall_ns
        return min(stall.last_sample for stall in uncapped) + 1.0 / STALL_HZ

    def _finish(self, watched: _Watched, end: float) -> None:
        stall = watched.stall
        if stall is None:
            return
        watched.stall = None
        stall.end = max(end, stall.start)
        self.longest = max(self.longest, stall.end - stall.start - stall.starved)
        self._stalls.append((watched, stall))
        self._calm.notify_all()
        while len(self._stalls) > KEPT_STALLS:
            _, old = self._stalls.popleft()
            self._release(old)

    def _forget(self, key: int, watched: _Watched, now: float) -> None:
        self._finish(watched, now)
        self._watched.pop(key, None)

    def _release(self, stall: _Stall) -> None:
        for stack in stall.samples or ():
            self.table.release(stack)
        stall.samples = None

    def stop(self) -> None:
        """Watch no more; what is held is let go (call it once the sampling thread has ended)."""
        with self._lock:
            self.stopped = True
            for watched in self._watched.values():
                if watched.stall is not None:
                    self._release(watched.stall)
            self._watched.clear()
            for _, stall in self._stalls:
                self._release(stall)
            self._stalls.clear()
            self._calm.notify_all()

    # -- the capture thread --

    def wait_until_calm(
        self, timeout: float, *, give_up: Callable[[], bool] = lambda: False
    ) -> bool:
        """Wait (at most `timeout` s, and not once `give_up()` says so) until no loop is
        stalled; True if none is."""
        deadline = time.monotonic() + max(0.0, timeout)
        with self._calm:
            while not (self.stopped or all(w.stall is None for w in self._watched.values())):
                left = deadline - time.monotonic()
                if left <= 0 or give_up():
                    return False
                self._calm.wait(min(left, CALM_POLL))
            return True

    def stalls(self) -> list[StallView]:
        """Every stall kept and every stall going on, newest first."""
        now, wall_now = self._clock(), self._wall()
        views: list[StallView] = []
        with self._lock:
            ongoing = [(w, w.stall) for w in self._watched.values() if w.stall is not None]
            for watched, stall in [*self._stalls, *ongoing]:
                assert stall is not None
                end = stall.end if stall.end is not None else now
                samples = sorted(
                    ((stack, n, wall) for stack, (n, wall) in (stall.samples or {}).items()),
                    key=lambda item: (-item[1], -item[2]),
                )
                views.append(
                    StallView(
                        loop=watched.label,
                        thread=watched.thread,
                        thread_id=watched.thread_id,
                        start_wall=wall_now - (now - stall.start),
                        seconds=end - stall.start,
                        ended=stall.end is not None,
                        detected_after=stall.detected - stall.start,
                        samples=tuple(samples),
                        sample_count=stall.taken,
                        capped=stall.capped,
                        excused=self._excused(stall.start, end),
                        no_frames=stall.no_frames,
                        starved=stall.starved,
                    )
                )
        views.sort(key=lambda v: -v.start_wall)
        return views

    def status(self) -> dict[str, Any]:
        with self._lock:
            watching = len(self._watched)
            stalled = sum(1 for w in self._watched.values() if w.stall is not None)
        return {
            "loops": watching,
            "stalled_now": stalled,
            "stalls_seen": self.stalls_seen,
            "longest_stall_s": round(self.longest, 3),
            "heartbeats": self.heartbeats,
            "threshold_ms": round(self.threshold * 1000.0, 3),
            "check_ms": round(self.check_every * 1000.0, 3),
        }


def _running(loop: Any) -> bool:
    try:
        return bool(loop.is_running())
    except Exception:
        return False


def _closed(loop: Any) -> bool:
    try:
        return bool(loop.is_closed())
    except Exception:
        return True
