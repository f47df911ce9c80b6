"""The always-on sampling thread: the flight recorder's ticks and the loop watchdog's checks.

One daemon thread, `holmespy-recorder`, serves both, so an idle process
pays for one wake-up schedule, not two: it wakes for the recorder's next
tick (every 1/HOLMES_RECORDER_HZ s) and for the watchdog's next deadline
(when a loop's silence would exceed the loop rule's min), whichever comes
first, and `STALL_HZ` times a second while a loop is stalled. It runs only
while the recorder or the loop rule is on.

The watcher thread drives the rest: `loop_stall_ms()` on each of its ticks
(finding new loops and reading the rule's value), `recording()` when a rule
fires. Nothing here raises into the host: an error is handed to `on_error`
(the watcher's counter and rate-limited log).

Neither part is made at `start()`, which must not import them (start-up
loads only what a watcher tick needs: tests/test_startup.py). The sampling
thread makes them itself (`prepare()`), each import `with importing:` (a
fork waits for it: holmespy.lazyimport): the recorder at its first wake-up,
right after start; the watchdog only once the host has imported asyncio (a
process without it runs no loop), looked for at every wake-up (at least
once a second). Until then the loop rule reads no value. Importing this
module registers the fork hook that notes the loop a child was forked
inside (`holmespy.loopstack`), which must be in place before any fork,
watchdog or not.
"""

from __future__ import annotations

import sys
import threading
import time

from holmespy import loopstack  # noqa: F401  (its fork hook: see the docstring)
from holmespy.config import Config
from holmespy.lazyimport import importing

TYPE_CHECKING = False  # typing's, without importing typing at start()
if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import AbstractContextManager
    from typing import Any

    from holmespy.recorder import Recorder, Recording
    from holmespy.watchdog import Watchdog

    ErrorSink = Callable[[str, BaseException], None]

__all__ = ["THREAD_NAME", "StackWatch"]

THREAD_NAME = "holmespy-recorder"

IDLE_WAIT = 1.0
"""Longest sleep of the thread, so a stop or a new setting is never waited on for long."""

DISCOVER_BUDGET = 0.001
"""Average seconds per watcher tick that finding loops may take before it is done less often
(on 3.11-3.13 it walks every task)."""

MAX_DISCOVER_STRIDE = 10


INF = float("inf")

FIRST_WAKE = 0.1
"""Seconds from start() to the sampling thread's first wake-up (sooner when rung: a loop
found, a stop): a short process (a script, a helper under `holmespy run`) ends first and
never pays for making the recorder (~1.5 ms of imports, benchmarks/startup.py)."""

SHORT_SLEEP = 0.15
"""Sleeps up to this long are not cut short by a ring: a stop or a new setting waits that long."""


class _Bell:
    """A sleep another thread can cut short: a held lock, released to ring.

    The thread sleeps 10 times a second for as long as the process lives, and
    each wake-up is paid in CPU (REFERENCE: measure what a cost is made of): on
    the 2-core VMs here `time.sleep` wakes for ~40 µs, a lock's timed acquire
    for ~60 µs and `threading.Event.wait` (a waiter lock built in Python each
    time) for ~85 µs. So short sleeps are plain sleeps, and only long ones
    (nothing to watch for a while) can be rung awake.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()

    def ring(self) -> None:
        try:  # noqa: SIM105  (contextlib is not loaded at start-up)
            self._lock.release()
        except RuntimeError:  # already rung and not yet heard
            pass

    def wait(self, seconds: float) -> None:
        """Sleep `seconds`, or until rung, however short."""
        self._lock.acquire(timeout=seconds)

    def sleep(self, seconds: float) -> None:
        if seconds <= SHORT_SLEEP:
            time.sleep(max(0.0, seconds))
        else:
            self._lock.acquire(timeout=seconds)  # rung: it holds the lock again


class StackWatch:
    def __init__(
        self,
        config: Config,
        *,
        on_error: ErrorSink,
        clock: Callable[[], float] = time.monotonic,
        perf_counter: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._on_error = on_error
        self._clock = clock
        self._perf_counter = perf_counter
        self._wake = _Bell()
        # A plain flag, not an Event: after fork() the child must set it without
        # taking a lock that a thread of the parent may have held.
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._spawned_at = 0.0
        self._started = False
        self._retired = False
        self._lock = threading.Lock()
        self._recorder_wanted: tuple[float, float] | None = None
        """(seconds, rate) of HOLMES_RECORDER and HOLMES_RECORDER_HZ, or None: off."""
        self._loop_threshold: float | None = None
        """The loop rule's min in seconds, or None: the rule is off."""
        self._failed: set[str] = set()
        """Parts whose making failed: not tried again until the next `configure()`."""
        self.recorder: Recorder | None = None
        """The flight recorder, once the sampling thread has made it."""
        self.watchdog: Watchdog | None = None
        """The loop watchdog, once the sampling thread has made it (after asyncio's import)."""
        self.discover_stride = 1
        self._discover_skip = 0
        self.configure(config)

    @property
    def ident(self) -> int | None:
        thread = self._thread
        return thread.ident if thread is not None else None

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    @property
    def wanted(self) -> bool:
        """Whether the recorder or the loop rule is on (the sampling thread has work)."""
        return self._recorder_wanted is not None or self._loop_threshold is not None

    # -- lifecycle --

    def configure(self, config: Config) -> None:
        """Apply HOLMES_RECORDER, HOLMES_RECORDER_HZ and HOLMES_LOOP (live, from any thread).

        A part already made takes the new settings at once; one not made yet
        is made with them by the sampling thread (`prepare()`).
        """
        with self._lock:
            self._failed.clear()
            if config.recorder is None:
                self._recorder_wanted = None
                self.recorder = None  # what it held goes with it: nothing else shares it
            else:
                self._recorder_wanted = (config.recorder, config.recorder_hz)
                if self.recorder is not None:
                    self.recorder.resize(config.recorder, config.recorder_hz)
            if config.loop is None:
                self._loop_threshold = None
                if self.watchdog is not None:
                    self.watchdog.stop()
                self.watchdog = None
            else:
                self._loop_threshold = config.loop.min / 1000.0
                if self.watchdog is not None:
                    self.watchdog.threshold = self._loop_threshold
            if self._started and self.wanted and (self._retired or not self.running):
                self._spawn()
            started = self._started
        if started:  # (not from __init__: the first wake-up would come at once)
            self._wake.ring()

    def prepare(self) -> None:
        """Make the parts that are wanted and can be made now (the sampling thread calls it
        at every wake-up; cheap once they are made). Never raises: see `on_error`."""
        if self._recorder_wanted is not None and self.recorder is None:
            self._make("recorder", self._make_recorder)
        if (
            self._loop_threshold is not None
            and self.watchdog is None
            and "asyncio" in sys.modules  # else no loop runs: nothing to watch
        ):
            self._make("watchdog", self._make_watchdog)

    def _make(self, part: str, make: Callable[[], None]) -> None:
        if part in self._failed or self._stopping:
            return
        try:
            make()
        except Exception as exc:
            self._failed.add(part)  # an import that failed once fails again: say it once
            self._on_error(f"making the {part}", exc)

    def _make_recorder(self) -> None:
        with importing:
            from holmespy.recorder import Recorder
        with self._lock:
            wanted = self._recorder_wanted  # (changed, maybe, while we imported)
            if wanted is not None and self.recorder is None and not self._stopping:
                self.recorder = Recorder(*wanted)

    def _make_watchdog(self) -> None:
        with importing:
            from holmespy.watchdog import Watchdog
        with self._lock:
            threshold = self._loop_threshold
            if threshold is not None and self.watchdog is None and not self._stopping:
                self.watchdog = Watchdog(threshold)

    def start(self) -> None:
        with self._lock:
            self._started = True
            if self.wanted and not self.running:
                self._spawn()

    def _spawn(self) -> None:
        self._stopping = False
        self._retired = False
        self._spawned_at = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stopping = True
        self._wake.ring()
        thread = self._thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(timeout)
        with self._lock:
            if self.watchdog is not None:
                self.watchdog.stop()
            if self.recorder is not None and not self.running:
                self.recorder.clear()

    def abandon_after_fork(self) -> None:
        """In a forked child: the parent's sampling thread is gone, and so are the loops it
        watched (or they are copies the child may run). Nothing is released here: any lock
        of ours may have been held by a parent thread at the fork, and would never open."""
        self._stopping = True
        self._recorder_wanted = self._loop_threshold = None
        self.recorder = None
        self.watchdog = None

    # -- the sampling thread --

    def _run(self) -> None:
        self._wake.wait(FIRST_WAKE)
        next_tick = self._clock()
        while not self._stopping:
            if not self.wanted and self._retire():
                return
            self.prepare()
            now = self._clock()
            due = INF
            frames = None
            recorder = self.recorder
            if recorder is not None:
                if now >= next_tick:
                    frames = sys._current_frames()  # one look for both the recorder and the dog
                    try:
                        recorder.tick(now, frames)
                    except Exception as exc:
                        self._on_error("flight recorder tick", exc)
                    next_tick += recorder.period
                    if next_tick <= now:  # late (GIL, suspend): resume the rhythm, don't burst
                        next_tick = now + recorder.period
                due = next_tick
            else:
                next_tick = now
            watchdog = self.watchdog
            if watchdog is not None:
                try:
                    due = min(due, watchdog.check(now, frames))
                except Exception as exc:
                    self._on_error("loop watchdog check", exc)
            del frames  # other threads' frames keep their locals alive
            wait = min(due, now + IDLE_WAIT) - self._clock()
            if wait > 0:
                self._wake.sleep(wait)

    def _retire(self) -> bool:
        """Both parts were turned off: end the thread (configure() starts a new one)."""
        with self._lock:
            if not self.wanted:
                self._retired = True
                return True
        return False

    # -- the watcher thread --

    def loop_stall_ms(self) -> float | None:
        """Find new loops (strided when costly), then the loop rule's value for this tick."""
        watchdog = self.watchdog
        if watchdog is None:
            return None
        if self._discover_skip > 0:
            self._discover_skip -= 1
        else:
            started = self._perf_counter()
            try:
                if watchdog.discover():
                    self._wake.ring()  # the sampling thread learns the new loops' deadlines
            except Exception as exc:
                self._on_error("loop discovery", exc)
            spent = self._perf_counter() - started
            self.discover_stride = min(MAX_DISCOVER_STRIDE, max(1, -int(-spent // DISCOVER_BUDGET)))
            self._discover_skip = self.discover_stride - 1
        try:
            return watchdog.take()
        except Exception as exc:
            self._on_error("loop stall reading", exc)
            return None

    def recording(self, trigger_wall: float) -> Recording | None:
        recorder = self.recorder
        return recorder.recording(trigger_wall) if recorder is not None else None

    def excused(self) -> AbstractContextManager[None]:
        """Around a capture that pauses the whole process: its stalls are holmespy's own."""
        watchdog = self.watchdog
        if watchdog is not None:
            return watchdog.excused()
        with importing:  # only around a heap capture, long after start-up
            import contextlib

        return contextlib.nullcontext()

    def status(self) -> dict[str, Any]:
        recorder, watchdog = self.recorder, self.watchdog
        return {
            "recorder": recorder.status() if recorder is not None else self._unmade("recorder"),
            "loop_watchdog": (
                {**watchdog.status(), "discover_stride": self.discover_stride}
                if watchdog is not None
                else self._unmade("watchdog")
            ),
            "thread": "running" if self.running else "stopped",
            "thread_cpu_pct": self._cpu_share(),
        }

    def _unmade(self, part: str) -> str:
        """Why a part is not there: off, failed, waiting for asyncio, or about to be made."""
        wanted = self._recorder_wanted if part == "recorder" else self._loop_threshold
        if wanted is None:
            return "off"
        if part in self._failed:
            return "failed (see status().last_error)"
        if part == "watchdog" and "asyncio" not in sys.modules:
            return "waiting for asyncio"
        return "starting"

    def _cpu_share(self) -> float | None:
        """The sampling thread's CPU time since it started, % of one core."""
        ident = self.ident
        if ident is None or not self.running:
            return None
        try:
            cpu = time.clock_gettime(time.pthread_getcpuclockid(ident))
        except (OSError, AttributeError):
            return None
        return round(100.0 * cpu / max(1e-9, time.monotonic() - self._spawned_at), 4)
