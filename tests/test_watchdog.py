"""The loop watchdog on a fake clock and a fake loop: heartbeats, stalls, samples, the rule's value.

The loop here is a stand-in that runs its callbacks when the test says so,
and time moves only when the test moves it, so every stall is exact. The
stacks are real: the loop's "thread" is a real thread parked in a known
function. The last tests use a real asyncio loop.
"""

from __future__ import annotations

import asyncio
import ctypes
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from holmespy import loopstack, runqueue
from holmespy.loops import LoopInfo, waiting_for_events
from holmespy.stacktable import StackTable
from holmespy.watchdog import (
    CHECK_EVERY,
    KEPT_STALLS,
    LATE,
    MAX_STALL_SAMPLES,
    STALL_HZ,
    Heartbeat,
    Watchdog,
)
from tests.loop_thread import LoopThread, needs_loop_discovery
from tests.parked import Parked, names

pytestmark = pytest.mark.timeout(30)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeLoop:
    """Holds the callbacks it is asked to run; runs them only when told to."""

    def __init__(self) -> None:
        self.running = True
        self.closed = False
        self.soon: list[tuple[Callable[..., None], tuple[Any, ...]]] = []

    def is_running(self) -> bool:
        return self.running

    def is_closed(self) -> bool:
        return self.closed

    def call_soon_threadsafe(
        self, callback: Callable[..., None], *args: Any, context: Any = None
    ) -> None:
        if self.closed:
            raise RuntimeError("Event loop is closed")
        self.soon.append((callback, args))

    def run_ready(self) -> None:
        ready, self.soon = self.soon, []
        for callback, args in ready:
            callback(*args)


class Rig:
    """A watched fake loop whose thread is parked in `park_here`; `idle` says whether it
    waits for events (as `loops.waiting_for_events` would say from its stack)."""

    def __init__(self, parked: Parked, threshold: float = 0.5) -> None:
        self.clock = Clock()
        self.loop = FakeLoop()
        self.parked = parked
        self.table = StackTable()
        self.listed = True
        self.idle = True
        self.dog = Watchdog(
            threshold,
            table=self.table,
            running_loops=self.loops,
            clock=self.clock,
            wall=lambda: 1_000_000.0 + self.clock.now,
            current_frames=lambda: {parked.ident: parked.frame()},
            is_idle=lambda frame: self.idle and frame is not None,
            loop_on_stack=lambda frame: self.loop if frame is not None else None,
            cpu_wait=self.cpu_wait,
            own_cpu_wait=lambda: self.watchdog_waited_for_cpu,
        )
        self.waited_for_cpu = 0.0
        """What the kernel says the loop's thread has waited for a CPU so far (moved by tests)."""
        self.watchdog_waited_for_cpu = 0.0
        """The same for the watchdog's own (sampling) thread."""

    def cpu_wait(self, ident: int) -> float | None:
        return self.waited_for_cpu if ident == self.parked.ident else None

    def loops(self) -> list[LoopInfo]:
        if not self.listed:
            return []
        return [
            LoopInfo(
                loop=self.loop,  # type: ignore[arg-type]
                running=self.loop.running,
                closed=self.loop.closed,
                thread_id=self.parked.ident,
                thread_name=self.parked.thread.name,
                task_count=1,
            )
        ]

    def check(self) -> float:
        return self.dog.check(self.clock.now)

    def idle_for(self, seconds: float) -> None:
        """The loop waits for events; the watchdog looks every CHECK_EVERY."""
        self.idle = True
        self._run(seconds, answer=False)

    def busy_for(self, seconds: float) -> None:
        """The loop runs callbacks, each heartbeat within the same iteration."""
        self.idle = False
        self._run(seconds, answer=True)

    def _run(self, seconds: float, *, answer: bool) -> None:
        end = self.clock.now + seconds
        while self.clock.now + CHECK_EVERY <= end + 1e-9:
            self.clock.now += CHECK_EVERY
            self.check()
            if answer:
                self.clock.now += 0.001
                self.loop.run_ready()
                self.clock.now -= 0.001

    def stall(self, seconds: float) -> list[float]:
        """One callback holds the loop for `seconds` from now; the watchdog checks whenever it
        asks to. Returns the times it checked while the loop was held."""
        self.idle = False
        end = self.clock.now + seconds
        checks = []
        due = self.check()
        while due <= end:
            self.clock.now = due
            checks.append(due)
            due = self.check()
        self.clock.now = end
        self.loop.run_ready()  # the blocking call returned: the loop runs what was asked
        self.idle = True
        self.clock.now += CHECK_EVERY / 2
        self.check()
        return checks


@pytest.fixture
def rig() -> Iterator[Rig]:
    with Parked("loop-thread") as parked:
        rig = Rig(parked)
        rig.dog.discover()
        rig.idle_for(1.0)
        yield rig


def test_an_idle_loop_is_never_asked_anything(rig: Rig) -> None:
    rig.idle_for(5.0)
    assert rig.loop.soon == []
    assert rig.dog.heartbeats == 0
    assert rig.dog.take() == 0.0


def test_a_busy_healthy_loop_answers_its_heartbeats_and_reads_zero(rig: Rig) -> None:
    rig.busy_for(5.0)
    assert rig.dog.heartbeats == 50  # one per look, each answered before the next
    assert rig.dog.take() == 0.0
    assert rig.dog.stalls() == []


def test_no_loop_means_no_value() -> None:
    with Parked("loop-thread") as parked:
        rig = Rig(parked)
        rig.listed = False
        rig.dog.discover()
        assert rig.dog.take() is None
        assert rig.dog.check(0.0) == float("inf")  # nothing to look at: no wake-up asked


def test_a_stall_is_seen_at_min_and_sampled_at_stall_hz_until_it_ends(rig: Rig) -> None:
    last_alive = rig.clock.now  # the last look saw it idle
    checks = rig.stall(2.0)
    # Asked at the first look, silent since: looked at every 100 ms, and seen exactly
    # when the silence reached min (0.5 s, a wake-up of its own), then sampled 50
    # times a second.
    assert checks[:4] == pytest.approx([last_alive + 0.1 * n for n in range(1, 5)])
    stall_checks = [t for t in checks if t >= last_alive + 0.5 - 1e-6]
    assert stall_checks[0] == pytest.approx(last_alive + 0.5)
    assert stall_checks[-1] - stall_checks[-2] == pytest.approx(1 / STALL_HZ)
    (view,) = rig.dog.stalls()
    assert view.ended
    assert view.seconds == pytest.approx(2.0)
    assert view.detected_after == pytest.approx(0.5)
    assert view.sample_count == 1 + round(1.5 * STALL_HZ)
    stack, count, wall = view.samples[0]
    assert count == view.sample_count
    assert wall == pytest.approx(view.sample_count * 1e9 / STALL_HZ, rel=0.01)
    assert "park_here" in names(stack.frames)
    assert view.thread == "loop-thread"


def test_the_value_is_the_longest_silence_since_the_last_reading(rig: Rig) -> None:
    rig.stall(0.3)  # under min: not sampled, but a value
    rig.idle_for(0.5)
    rig.stall(0.8)
    rig.busy_for(0.5)
    assert rig.dog.take() == pytest.approx(800.0)
    assert rig.dog.take() == 0.0  # read once
    assert rig.dog.stalls_seen == 1  # only the one over min was sampled


def test_a_stall_still_going_on_counts_so_far(rig: Rig) -> None:
    began = rig.clock.now
    rig.idle = False
    rig.check()
    rig.clock.now = began + 1.2
    rig.check()
    assert rig.dog.take() == pytest.approx(1200.0)
    (view,) = rig.dog.stalls()
    assert not view.ended
    assert view.seconds == pytest.approx(1.2)


def test_a_heartbeat_a_little_late_is_not_a_stall(rig: Rig) -> None:
    rig.idle = False
    rig.check()
    rig.clock.now += LATE * 0.9
    rig.loop.run_ready()
    rig.clock.now += CHECK_EVERY
    rig.check()
    assert rig.dog.take() == 0.0


def _overloaded(rig: Rig, seconds: float, *, waiting: Callable[[float], bool]) -> None:
    """Run the watchdog for `seconds` of a silent loop; `waiting(t)` says whether, `t` s in,
    the loop's thread is ready to run but waits for a CPU (the kernel's run-queue wait)."""
    began = rig.clock.now
    rig.idle = False
    due = rig.check()
    while rig.clock.now < began + seconds - 1e-9:
        step = min(due, rig.clock.now + CHECK_EVERY, began + seconds) - rig.clock.now
        if waiting(rig.clock.now - began):
            rig.waited_for_cpu += step
        rig.clock.now += step
        due = rig.check()


def test_a_loop_an_overloaded_machine_keeps_off_the_cpu_is_not_stalled(rig: Rig) -> None:
    # The loop's thread is runnable the whole time but gets no CPU: the machine's fault.
    _overloaded(rig, 2.0, waiting=lambda t: True)
    assert rig.dog.stalls_seen == 0
    # The wait is counted from the first look that found the heartbeat late, one look after
    # it was asked for: only that first look's worth of silence is left.
    assert rig.dog.take() == pytest.approx(CHECK_EVERY * 1000)


def test_while_the_machine_stays_overloaded_each_silence_loses_all_its_wait(rig: Rig) -> None:
    _overloaded(rig, 1.0, waiting=lambda t: True)
    rig.loop.run_ready()  # it got a CPU at last and ran the heartbeat
    rig.check()  # which the next look sees
    assert rig.dog.take() == pytest.approx(CHECK_EVERY * 1000)  # as in the test above
    # The next heartbeats note the CPU wait as they are asked for, not a look later.
    _overloaded(rig, 2.0, waiting=lambda t: True)
    assert rig.dog.take() == pytest.approx(0.0, abs=1e-6)
    assert rig.dog.stalls_seen == 0


def test_a_look_that_comes_late_does_not_blame_the_loop_for_the_gap(rig: Rig) -> None:
    # The watchdog's own thread was kept from running for 0.6 s (an overloaded machine);
    # the loop had answered its heartbeat at once, so nothing says it was ever silent.
    rig.idle = False
    rig.check()
    rig.clock.now += 0.001
    rig.loop.run_ready()
    rig.clock.now += 0.6
    rig.watchdog_waited_for_cpu += 0.6
    rig.check()
    assert rig.dog.stalls_seen == 0
    assert rig.dog.take() == 0.0


def test_a_look_kept_late_by_a_call_holding_the_gil_blames_the_loop(rig: Rig) -> None:
    # The loop answered, then a handler's C call held the GIL for 2 s: the watchdog's
    # thread did not wait for a CPU (it slept on the GIL), so the gap is the loop's.
    rig.idle = False
    rig.check()
    rig.clock.now += 0.001
    rig.loop.run_ready()
    rig.clock.now += 2.0
    rig.check()  # still busy when the watchdog gets the GIL back
    assert rig.dog.stalls_seen == 1
    rig.clock.now += CHECK_EVERY
    rig.check()
    assert rig.dog.take() == pytest.approx(2000.0 + CHECK_EVERY * 1000)


def test_a_blocking_call_on_an_overloaded_machine_counts_all_but_its_wait_for_a_cpu(
    rig: Rig,
) -> None:
    # time.sleep(1.0) in a handler; when it returns, the thread waits 0.3 s for a CPU.
    _overloaded(rig, 1.3, waiting=lambda t: t >= 1.0)
    rig.loop.run_ready()
    rig.idle = True
    rig.clock.now += CHECK_EVERY / 2
    rig.check()
    (view,) = rig.dog.stalls()
    assert view.ended
    assert view.seconds == pytest.approx(1.3)
    # As read at the last look, up to one sampling period before the loop ran again.
    assert 0.3 - 1.0 / STALL_HZ - 1e-9 <= view.starved <= 0.3
    assert view.detected_after == pytest.approx(0.5)  # the sleep has no CPU wait to take off
    assert rig.dog.take() == pytest.approx(1000.0, abs=1000.0 / STALL_HZ)


def test_without_the_kernels_cpu_wait_the_whole_silence_counts(rig: Rig) -> None:
    rig.dog._cpu_wait = lambda ident: None
    _overloaded(rig, 1.0, waiting=lambda t: True)
    assert rig.dog.stalls_seen == 1
    assert rig.dog.take() == pytest.approx(1000.0)


def test_a_cpu_wait_reader_that_raises_is_not_raised_into_the_watchdog(rig: Rig) -> None:
    def broken(ident: int) -> float | None:
        raise PermissionError("/proc is not ours")

    rig.dog._cpu_wait = broken
    _overloaded(rig, 1.0, waiting=lambda t: True)
    assert rig.dog.take() == pytest.approx(1000.0)


def test_the_cpu_wait_of_a_real_thread_is_read_from_the_kernel() -> None:
    waited = runqueue.waited(threading.get_ident())
    if waited is None:
        pytest.skip("this kernel keeps no schedstat")
    assert waited >= 0.0
    assert runqueue.waited(-1) is None  # no such thread


def test_the_own_cpu_wait_is_the_calling_threads() -> None:
    mine = runqueue.own_wait()
    if mine is None:
        pytest.skip("this kernel keeps no schedstat")
    # Read again through this thread's id: the same counter, which only grows.
    again = runqueue.waited(threading.get_ident())
    assert again is not None
    assert mine <= again


def test_a_stall_during_holmespys_own_heap_capture_is_kept_but_not_counted(rig: Rig) -> None:
    with rig.dog.excused():
        rig.stall(1.5)
    rig.idle_for(0.5)
    assert rig.dog.take() == 0.0
    (view,) = rig.dog.stalls()
    assert view.excused
    rig.stall(0.9)  # after it: counted again
    assert rig.dog.take() == pytest.approx(900.0)


def test_a_stopped_loop_is_not_stalled_and_its_restart_is_not_a_stall(rig: Rig) -> None:
    rig.idle = False
    rig.loop.running = False
    rig.clock.now += 5.0
    rig.check()
    rig.loop.running = True
    restarted = rig.clock.now
    rig.check()
    rig.clock.now += 0.4  # under min since it was seen running again
    assert rig.check() == pytest.approx(restarted + 0.5)
    assert rig.dog.stalls() == []


def test_a_closed_loop_is_forgotten(rig: Rig) -> None:
    rig.loop.closed = True
    rig.check()
    assert rig.dog.status()["loops"] == 0


def test_a_loop_that_refuses_the_heartbeat_is_forgotten_not_raised(rig: Rig) -> None:
    rig.idle = False

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("Event loop is closed")

    rig.loop.call_soon_threadsafe = refuse  # type: ignore[method-assign]
    rig.check()
    assert rig.dog.status()["loops"] == 0


def test_a_long_stall_stops_being_sampled_at_the_cap_but_is_timed_to_its_end(rig: Rig) -> None:
    rig.stall(0.5 + 2 * MAX_STALL_SAMPLES / STALL_HZ)
    (view,) = rig.dog.stalls()
    assert view.capped
    assert view.sample_count == MAX_STALL_SAMPLES
    assert view.seconds == pytest.approx(0.5 + 2 * MAX_STALL_SAMPLES / STALL_HZ)


def test_a_capped_stall_beside_a_sampled_one_does_not_make_the_thread_spin() -> None:
    with Parked("loop-thread") as parked:
        clock = Clock()
        early, late = FakeLoop(), FakeLoop()
        infos = [
            LoopInfo(loop, True, False, parked.ident, "loop-thread", 1)  # type: ignore[arg-type]
            for loop in (early, late)
        ]
        listed = [infos[0]]
        dog = Watchdog(
            0.5,
            running_loops=lambda: listed,
            clock=clock,
            current_frames=lambda: {parked.ident: parked.frame()},
            is_idle=lambda frame: False,
            loop_on_stack=lambda frame: listed[-1].loop,  # the newest listed loop is found
        )
        dog.discover()
        while dog.stalls_seen == 0 or not dog._watched[id(early)].stall.capped:  # type: ignore[union-attr]
            clock.now = dog.check(clock.now)
        listed.append(infos[1])
        dog.discover()
        for _ in range(100):
            due = dog.check(clock.now)
            assert due > clock.now  # never a wake-up asked for the past
            clock.now = due
        assert dog.stalls_seen == 2


def test_only_the_newest_stalls_are_kept_and_the_rest_let_go(rig: Rig) -> None:
    for _ in range(KEPT_STALLS + 5):
        rig.stall(0.6)
        rig.idle_for(0.2)
    assert len(rig.dog.stalls()) == KEPT_STALLS
    assert rig.table.stack_count == 1  # every kept stall sampled the same stack
    rig.dog.stop()
    assert (rig.table.stack_count, rig.table.frame_count) == (0, 0)
    assert rig.dog.take() is None


def test_a_heartbeat_only_notes_when_it_ran() -> None:
    loop = FakeLoop()
    clock = Clock()
    beat = Heartbeat(loop, clock=clock)  # type: ignore[arg-type]
    beat.post(clock.now)
    assert beat.answered() is None
    clock.now += 0.25
    loop.run_ready()
    assert beat.answered() == clock.now


def test_the_capture_waits_for_a_stall_to_end(rig: Rig) -> None:
    rig.idle = False
    rig.check()
    rig.clock.now += 0.6
    rig.check()
    assert not rig.dog.wait_until_calm(0)

    def end_it() -> None:
        rig.loop.run_ready()
        rig.check()

    ender = threading.Timer(0.05, end_it)
    ender.start()
    assert rig.dog.wait_until_calm(10)
    ender.join()
    assert rig.dog.stalls()[0].ended


def test_a_capture_stops_waiting_for_a_stall_when_another_capture_is_queued(rig: Rig) -> None:
    rig.idle = False
    rig.check()
    rig.clock.now += 0.6
    rig.check()
    queued = threading.Event()
    threading.Timer(0.05, queued.set).start()
    assert not rig.dog.wait_until_calm(30, give_up=queued.is_set)  # returns once queued
    assert not rig.dog.stalls()[0].ended


# -- on a real loop --


def wait_for(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def checked(dog: Watchdog, predicate: Callable[[], bool]) -> Callable[[], bool]:
    """Play the sampling thread: look at the loops each time round, then test."""
    return lambda: dog.check(time.monotonic()) is not None and predicate()


@needs_loop_discovery
def test_on_a_real_idle_loop_the_watchdog_sees_it_waiting_and_asks_nothing() -> None:
    dog = Watchdog(0.5)
    with LoopThread("real-loop") as lt:
        lt.spawn(asyncio.sleep(3600), name="keeps-the-loop-listed")
        assert dog.discover() == 1
        assert dog.discover() == 0  # already watched
        ident = lt.thread.ident
        # Past spawning the task, back in select(): nothing left to run.
        wait_for(lambda: waiting_for_events(sys._current_frames().get(ident)))
        for _ in range(20):
            dog.check(time.monotonic())
            time.sleep(0.01)
        assert dog.heartbeats == 0  # it was waiting in select() at every look
        lt.loop.call_soon_threadsafe(blocking_handler, 0.3)  # busy for a moment: asked
        wait_for(checked(dog, lambda: dog.heartbeats >= 1))
        tasks = lt.call(lambda: [t.get_name() for t in asyncio.all_tasks(lt.loop)])
        assert tasks == ["keeps-the-loop-listed"]  # the heartbeat is not a task


def blocking_handler(seconds: float) -> None:
    time.sleep(seconds)


@needs_loop_discovery
def test_on_a_real_loop_a_blocking_call_is_caught_in_the_act() -> None:
    dog = Watchdog(0.3)
    with LoopThread("real-loop") as lt:
        lt.spawn(asyncio.sleep(3600))
        dog.discover()
        lt.loop.call_soon_threadsafe(blocking_handler, 1.0)
        wait_for(checked(dog, lambda: dog.stalls_seen == 1))
        wait_for(checked(dog, lambda: dog.wait_until_calm(0)))
    (view,) = dog.stalls()
    top = view.samples[0][0]
    assert names(top.frames)[:1] == ["blocking_handler"]
    assert view.thread == "real-loop"
    assert view.seconds >= 1.0  # counted from the last look before the call: never short


def blocking_call_holding_the_gil(seconds: float) -> None:
    """A C call that blocks without releasing the GIL (PyDLL keeps it), then a little
    Python, as a driver that parses what it read."""
    ctypes.PyDLL(None).usleep(int(seconds * 1e6))
    end = time.monotonic() + 0.2
    while time.monotonic() < end:
        pass


@needs_loop_discovery
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="usleep from libc")
def test_on_a_real_loop_a_blocking_call_holding_the_gil_is_a_stall() -> None:
    dog = Watchdog(0.5)
    stop = threading.Event()

    def sampling_thread() -> None:
        while not stop.is_set():
            due = min(dog.check(time.monotonic()), time.monotonic() + CHECK_EVERY)
            stop.wait(max(0.0, due - time.monotonic()))

    with LoopThread("real-loop") as lt:
        lt.spawn(asyncio.sleep(3600))
        dog.discover()
        sampler = threading.Thread(target=sampling_thread, daemon=True)
        sampler.start()
        try:
            lt.call(lambda: blocking_call_holding_the_gil(1.0))
            wait_for(lambda: dog.wait_until_calm(0) and dog.stalls_seen >= 1)
        finally:
            stop.set()
            sampler.join(5)
    assert dog.take() is not None
    (view,) = dog.stalls()
    assert view.seconds >= 1.0


def wait_on_a_selector(release: threading.Event) -> None:
    # What subprocess.run() does inside a handler: a selector of its own, not the loop's.
    import selectors
    import socket

    a, b = socket.socketpair()
    with selectors.DefaultSelector() as selector, a, b:
        selector.register(a, selectors.EVENT_READ)
        while not release.is_set():
            selector.select(0.05)


def test_only_the_loops_own_select_counts_as_waiting_for_events() -> None:
    with LoopThread("real-loop") as lt, Parked("handler", wait_on_a_selector) as handler:
        ident = lt.thread.ident
        wait_for(lambda: waiting_for_events(sys._current_frames().get(ident)))
        deadline = time.monotonic() + 10
        while sys._current_frames()[handler.ident].f_code.co_name != "select":
            assert time.monotonic() < deadline
        assert not waiting_for_events(sys._current_frames()[handler.ident])
    assert not waiting_for_events(None)


# -- only loops this process runs: what a fork leaves behind --------------------------------


def test_a_loop_whose_thread_does_not_run_it_is_not_watched() -> None:
    # After a fork the parent's loops still say they run, naming threads the child does
    # not have; a thread of the child may reuse such an ident. Heartbeats to that loop
    # would never be answered: a stall from the fork on.
    with Parked("reused-ident") as parked:
        loop, other = FakeLoop(), FakeLoop()
        info = LoopInfo(loop, True, False, parked.ident, "reused-ident", 1)  # type: ignore[arg-type]
        on_stack: list[Any] = [other]
        dog = Watchdog(
            0.5,
            running_loops=lambda: [info],
            current_frames=lambda: {parked.ident: parked.frame()},
            loop_on_stack=lambda frame: on_stack[0],
        )
        assert dog.discover() == 0
        assert dog.status()["loops"] == 0
        on_stack[0] = loop  # the thread does run it: watched
        assert dog.discover() == 1


def test_the_loop_a_child_was_forked_inside_is_not_watched_until_it_stops() -> None:
    loop = asyncio.new_event_loop()

    def here() -> list[LoopInfo]:
        ident = threading.get_ident()
        return [LoopInfo(loop, loop.is_running(), False, ident, "MainThread", 1)]

    dog = Watchdog(0.5, running_loops=here)

    async def forked_here() -> int:
        loopstack.note_inherited_loop()  # what runs in a child forked from this callback
        return dog.discover()

    async def run_again() -> int:
        return dog.discover()

    try:
        assert loop.run_until_complete(forked_here()) == 0
        assert dog.discover() == 0  # stopped: not running, nothing to watch
        assert not loopstack.inherited_still_running()  # and no longer the parent's
        assert loop.run_until_complete(run_again()) == 1  # run again, by the child: watched
    finally:
        loopstack._inherited.clear()
        loop.close()
