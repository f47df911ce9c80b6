"""The sampling thread that serves the recorder and the watchdog: settings, errors, fork."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from holmespy import Config, Rule
from holmespy.profilers import CaptureContext, capture_recorder
from holmespy.stackwatch import FIRST_WAKE, StackWatch
from holmespy.watcher import Watcher
from tests.conftest import RunProgram
from tests.loop_thread import needs_loop_discovery

pytestmark = pytest.mark.timeout(60)


def wait_for(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def config(tmp_path: Path, **changes: object) -> Config:
    return Config(dump_path=tmp_path, service="unit", **changes)  # type: ignore[arg-type]


def test_settings_apply_live_and_turning_both_off_ends_the_thread(tmp_path: Path) -> None:
    errors: list[str] = []
    stacks = StackWatch(config(tmp_path), on_error=lambda where, exc: errors.append(where))
    stacks.start()
    try:
        assert stacks.running
        wait_for(lambda: stacks.recorder is not None and stacks.recorder.ticks >= 3)
        stacks.configure(config(tmp_path, loop=Rule(min=800, diff=100, abs=2000)))
        assert stacks.watchdog is not None
        assert stacks.watchdog.threshold == 0.8
        stacks.configure(config(tmp_path, recorder=5.0, recorder_hz=20.0))
        assert stacks.recorder is not None
        assert (stacks.recorder.seconds, stacks.recorder.rate) == (5.0, 20.0)
        stacks.configure(config(tmp_path, recorder=None, loop=None))
        assert stacks.status()["recorder"] == stacks.status()["loop_watchdog"] == "off"
        wait_for(lambda: not stacks.running)  # nothing to do: no thread
        stacks.configure(config(tmp_path))
        assert stacks.running
        wait_for(lambda: stacks.recorder is not None and stacks.recorder.ticks >= 3)
    finally:
        stacks.stop()
    assert not stacks.running
    assert errors == []


def test_an_error_in_a_tick_is_reported_and_the_thread_goes_on(tmp_path: Path) -> None:
    errors: list[str] = []
    stacks = StackWatch(config(tmp_path), on_error=lambda where, exc: errors.append(where))
    stacks.prepare()  # what the sampling thread does first: make the recorder
    assert stacks.recorder is not None

    def broken(now: float, frames: object = None) -> None:
        raise RuntimeError("tick bug")

    stacks.recorder.tick = broken  # type: ignore[method-assign]
    stacks.start()
    try:
        wait_for(lambda: len(errors) >= 3)
        assert stacks.running
    finally:
        stacks.stop()
    assert set(errors) == {"flight recorder tick"}


def test_abandoning_after_fork_takes_no_lock_a_parent_thread_may_hold(tmp_path: Path) -> None:
    stacks = StackWatch(config(tmp_path), on_error=lambda where, exc: None)
    stacks.prepare()
    watchdog, recorder = stacks.watchdog, stacks.recorder
    assert watchdog is not None
    assert recorder is not None
    done = threading.Event()
    # Held as a parent's thread could hold them when fork() struck: in the child
    # they would never be released.
    with watchdog._lock, recorder._lock, stacks._lock:
        threading.Thread(target=lambda: (stacks.abandon_after_fork(), done.set())).start()
        assert done.wait(5), "abandon_after_fork waited for a lock"
    assert stacks.recorder is None
    assert stacks.watchdog is None


def test_the_parts_are_made_by_the_sampling_thread_not_by_start(tmp_path: Path) -> None:
    # start() runs on the host's thread, maybe in its start-up: it imports neither part
    # (tests/test_startup.py checks the modules in a fresh interpreter).
    stacks = StackWatch(config(tmp_path), on_error=lambda where, exc: None)
    assert stacks.recorder is None
    assert stacks.watchdog is None
    assert stacks.status()["recorder"] == "starting"
    stacks.start()
    try:
        wait_for(lambda: stacks.recorder is not None and stacks.recorder.ticks >= 1)
        assert stacks.watchdog is not None  # asyncio is imported here: made on the same wake-up
        made = stacks.recorder, stacks.watchdog
        stacks.configure(config(tmp_path, recorder=5.0, loop=Rule(min=800, diff=100, abs=2000)))
        assert (stacks.recorder, stacks.watchdog) == made  # new settings, same parts
    finally:
        stacks.stop()


def test_a_part_that_cannot_be_made_is_reported_once_and_tried_again_on_new_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    errors: list[str] = []
    stacks = StackWatch(config(tmp_path), on_error=lambda where, exc: errors.append(where))
    monkeypatch.setitem(sys.modules, "holmespy.recorder", None)  # its import raises
    for _ in range(3):  # three wake-ups of the sampling thread
        stacks.prepare()
    assert errors == ["making the recorder"]
    assert stacks.recorder is None
    assert stacks.watchdog is not None  # the other part is not held back
    assert stacks.status()["recorder"] == "failed (see status().last_error)"
    monkeypatch.undo()
    stacks.configure(config(tmp_path, recorder=5.0))
    stacks.prepare()
    assert stacks.recorder is not None
    assert errors == ["making the recorder"]


PREFORK_LOOP = """
import asyncio, os, threading, time
import holmespy

def part(name, key):
    # Until the sampling thread has made a part, status says why it is not there.
    value = holmespy.status().stacks[name]
    return value[key] if isinstance(value, dict) else 0

holmespy.start()
loop = asyncio.new_event_loop()
threading.Thread(target=loop.run_forever, name="parent-loop", daemon=True).start()
asyncio.run_coroutine_threadsafe(asyncio.sleep(3600), loop)
deadline = time.monotonic() + 20
while part("loop_watchdog", "loops") < 1:
    assert time.monotonic() < deadline, holmespy.status()
    time.sleep(0.05)

pid = os.fork()
if pid == 0:
    status = holmespy.status()
    assert status.stacks["thread"] == "running", status
    deadline = time.monotonic() + 20
    while part("recorder", "ticks_held") < 5:
        assert time.monotonic() < deadline, holmespy.status()
        time.sleep(0.05)
    print("child ok", flush=True)
    os._exit(0)
_, code = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(code) == 0, code
assert holmespy.status().stacks["loop_watchdog"]["loops"] == 1
print("parent ok")
"""


@needs_loop_discovery
def test_a_forked_child_records_on_its_own_and_the_parent_keeps_watching(
    run_program: RunProgram,
) -> None:
    run = run_program(PREFORK_LOOP, HOLMES_INTERVAL="100ms")
    assert "child ok" in run.proc.stdout
    assert "parent ok" in run.proc.stdout


class StuckBell:
    """A sampling thread's sleep that nothing cuts short (`time.sleep`, as between ticks),
    here until the test lets it go."""

    def __init__(self) -> None:
        self.asleep = threading.Event()
        self.release = threading.Event()

    def ring(self) -> None:
        pass  # a plain sleep does not hear it

    def wait(self, seconds: float) -> None:
        pass  # the first wake-up, at once here

    def sleep(self, seconds: float) -> None:
        self.asleep.set()
        self.release.wait()


class FirstWait:
    """The sampling thread's first wait, held until the test lets it go."""

    def __init__(self) -> None:
        self.waiting: list[float] = []
        self.asked = threading.Event()
        self.release = threading.Event()

    def ring(self) -> None:
        self.release.set()

    def wait(self, seconds: float) -> None:
        self.waiting.append(seconds)
        self.asked.set()
        self.release.wait()

    def sleep(self, seconds: float) -> None:
        time.sleep(min(seconds, 0.01))


def test_a_process_that_ends_before_the_first_wake_up_never_makes_the_recorder(
    tmp_path: Path,
) -> None:
    # A script, or a helper process under `holmespy run`, is over in milliseconds: the
    # sampling thread waits FIRST_WAKE before it imports and makes the recorder.
    watcher = Watcher(config(tmp_path, interval=3600, cpu=None, mem=None, thread=None))
    assert watcher.stacks._wake._lock.locked()  # not rung by the settings made before start
    first = FirstWait()
    watcher.stacks._wake = first  # type: ignore[assignment]
    watcher.start()
    try:
        assert first.asked.wait(10)
        assert first.waiting == [FIRST_WAKE]
        assert watcher.stacks.recorder is None
    finally:
        first.release.set()
    wait_for(lambda: watcher.stacks.recorder is not None and watcher.stacks.recorder.ticks >= 1)
    watcher.stop(timeout=30)


def test_an_exiting_host_is_not_held_back_by_the_sampling_threads_sleep(tmp_path: Path) -> None:
    watcher = Watcher(config(tmp_path, interval=0.01, cpu=None, mem=None, thread=None))
    bell = StuckBell()
    watcher.stacks._wake = bell  # type: ignore[assignment]
    watcher.start()
    try:
        assert bell.asleep.wait(10)
        watcher.stop(timeout=30, exiting=True)  # joined, it would wait out the sleep
        assert watcher.stacks.running  # told to stop, not waited for
        assert watcher.stacks.watchdog is not None
        assert watcher.stacks.watchdog.stopped
    finally:
        bell.release.set()
    wait_for(lambda: not watcher.stacks.running)  # it woke, saw the stop, and ended


def test_stop_joins_the_sampling_thread(tmp_path: Path) -> None:
    watcher = Watcher(config(tmp_path, interval=0.01, cpu=None, mem=None, thread=None))
    watcher.start()
    wait_for(lambda: watcher.stacks.recorder is not None and watcher.stacks.recorder.ticks >= 2)
    watcher.stop(timeout=30)  # returns as soon as the thread has ended
    assert not watcher.stacks.running
    assert watcher.stacks.recorder is not None
    assert watcher.stacks.recorder.status()["ticks_held"] == 0  # what it held is let go


def test_an_event_before_the_recorder_is_made_says_why_it_has_no_recorder_file(
    tmp_path: Path,
) -> None:
    on = CaptureContext(tmp_path, "thread", config(tmp_path), recording=None)
    off = CaptureContext(tmp_path, "thread", config(tmp_path, recorder=None), recording=None)
    assert capture_recorder(on) == {
        "why": "the flight recorder was not made yet: the rule fired right after start"
    }
    assert capture_recorder(off) == {"off": "HOLMES_RECORDER=off"}
    assert list(tmp_path.iterdir()) == []
