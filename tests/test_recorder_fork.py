"""Prefork servers fork right after `holmespy.start()`: the flight recorder and the loop
watchdog of a forked child are the child's own.

Each program forks at the worst moment it can arrange without timing: while the
parent's sampling thread could be inside its locks (the test holds them), with a
busy thread and a running loop only the parent has. A hang (the run's timeout) would
be a lock copied locked into the child.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import RunProgram

pytestmark = pytest.mark.timeout(90)

PREAMBLE = """
import asyncio, json, os, sys, threading, time
import holmespy

def wait_for(predicate, what, seconds=30.0):
    # Generous: the machine may be slow; a miss is a failure, never a sleep-then-assert.
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            print("timed out waiting for", what, flush=True)
            os._exit(4)
        time.sleep(0.02)

def labels(recorder):
    ticks = recorder.recording(time.time()).ticks()
    return ticks, {label for tick in ticks for label, _, _ in tick.samples}

async def park():
    await asyncio.sleep(3600)

async def park_some(n):
    return [asyncio.create_task(park()) for _ in range(n)]

def loop_in_thread(name):
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, name=name, daemon=True).start()
    parked = asyncio.run_coroutine_threadsafe(park_some(3), loop).result(30)
    return loop, parked
"""

RECORDER_AND_LOOPS_ACROSS_FORK = (
    PREAMBLE
    + """
holmespy.start()
parent = holmespy.current()

stop_burning = threading.Event()
def burn():
    while not stop_burning.is_set():
        sum(i * i for i in range(1000))

threading.Thread(target=burn, name="parent-only-burner", daemon=True).start()
parent_loop, _ = loop_in_thread("parent-loop")

# The parent's recorder has seen its busy thread, its watchdog watches its loop.
def made(stacks):
    # The sampling thread makes the recorder and (asyncio being imported) the watchdog.
    wait_for(lambda: stacks.recorder is not None and stacks.watchdog is not None, "parts made")
    return stacks

made(parent.stacks)
wait_for(lambda: "parent-only-burner" in labels(parent.stacks.recorder)[1], "parent ring")
wait_for(lambda: parent.stacks.watchdog.status()["loops"] == 1, "parent watchdog")
parent_native = next(t.native_id for t in threading.enumerate() if t.name == "holmespy-recorder")

# As if the sampling thread were inside each of its locks at the moment of the fork.
held = [parent.stacks._lock, parent.stacks.recorder._lock, parent.stacks.watchdog._lock]
for lock in held:
    lock.acquire()
forked_at = time.monotonic()
pid = os.fork()
if pid == 0:
    child = holmespy.current()  # any call into holmespy starts the child's own watcher
    assert child is not None and child is not parent and child.pid == os.getpid()
    recorders = [t for t in threading.enumerate() if t.name == "holmespy-recorder"]
    made(child.stacks)
    wait_for(lambda: (child.stacks.recorder.status()["ticks_held"] >= 3), "child ticks")
    ticks, seen = labels(child.stacks.recorder)
    dog = child.stacks.watchdog
    inherited = dog.discover()  # what the child's first discovery finds: the parent's loop?
    stalled_then = dog.status()
    child_loop, _ = loop_in_thread("child-loop")
    dog.discover()  # (or the child's watcher thread, on its tick: either finds it)
    print(json.dumps({
        "recorder_threads": len(recorders),
        "recorder_native_is_new": all(t.native_id != parent_native for t in recorders),
        "recorder_running": child.stacks.running,
        "oldest_tick_after_fork": min(t.mono for t in ticks) >= forked_at,
        "labels": sorted(seen),
        "inherited_loops_watched": inherited,
        "loops_after_first_discovery": stalled_then["loops"],
        "loops_after_child_loop": dog.status()["loops"],
    }), flush=True)
    os._exit(0)
for lock in held:
    lock.release()
_, code = os.waitpid(pid, 0)
stop_burning.set()
assert os.waitstatus_to_exitcode(code) == 0, code
# The parent goes on as before: its recorder still ticks, its loop is still watched.
before = parent.stacks.recorder.ticks
wait_for(lambda: parent.stacks.recorder.ticks > before, "parent ticks after the fork")
assert parent.stacks.watchdog.status()["loops"] == 1
holmespy.stop()
"""
)


def test_a_forked_child_records_and_watches_only_what_is_its_own(
    run_program: RunProgram,
) -> None:
    run = run_program(RECORDER_AND_LOOPS_ACROSS_FORK, HOLMES_INTERVAL="100ms")
    out = json.loads(run.proc.stdout.strip().splitlines()[-1])
    # Its own sampling thread, started in the child (not the parent's, which is gone).
    assert out["recorder_threads"] == 1
    assert out["recorder_native_is_new"]
    assert out["recorder_running"]
    # A fresh ring: nothing the parent recorded, its busy thread least of all.
    assert out["oldest_tick_after_fork"]
    assert "parent-only-burner" not in out["labels"]
    assert "MainThread" in out["labels"]
    # The parent's loop object still says it runs (its thread id is set), but no thread
    # of the child runs it: watching it would post heartbeats nobody answers, a stall.
    assert out["inherited_loops_watched"] == 0
    assert out["loops_after_first_discovery"] == 0
    assert out["loops_after_child_loop"] == 1


FORKED_FROM_INSIDE_A_LOOP = (
    PREAMBLE
    + """
holmespy.start()
watcher = holmespy.current()

async def main():
    parked = await park_some(2)
    wait_for(lambda: watcher.stacks.watchdog is not None, "parent watchdog made")
    wait_for(lambda: watcher.stacks.watchdog.discover() == 0
             and watcher.stacks.watchdog.status()["loops"] == 1, "parent watchdog")
    # multiprocessing's fork start method from a handler: the child runs its job
    # synchronously, inside the callback it was forked from, and never returns to the loop.
    pid = os.fork()
    if pid == 0:
        child = holmespy.current()
        wait_for(lambda: child.stacks.watchdog is not None, "child watchdog made")
        dog = child.stacks.watchdog
        inherited = dog.discover()
        # A loop the child starts itself, even on another thread, is watched.
        child_loop, _ = loop_in_thread("child-loop")
        dog.discover()  # (or the child's watcher thread, on its tick: either finds it)
        print(json.dumps({"inherited": inherited, "loops": dog.status()["loops"]}))
        sys.stdout.flush()
        os._exit(0)
    _, code = await asyncio.to_thread(os.waitpid, pid, 0)
    assert os.waitstatus_to_exitcode(code) == 0, code
    assert watcher.stacks.watchdog.status()["loops"] == 1  # the parent still watches its loop
    for task in parked:
        task.cancel()

asyncio.run(main())
holmespy.stop()
"""
)


def test_a_child_forked_inside_a_running_loop_does_not_watch_that_loop(
    run_program: RunProgram,
) -> None:
    # The child runs no callback of that loop ever again: watched, it would read as stalled
    # from the fork on, and fire the loop rule in every worker multiprocessing forked.
    run = run_program(FORKED_FROM_INSIDE_A_LOOP, HOLMES_INTERVAL="100ms")
    out = json.loads(run.proc.stdout.strip().splitlines()[-1])
    assert out == {"inherited": 0, "loops": 1}


FORKED_FROM_INSIDE_A_LOOP_BEFORE_ANY_WATCHDOG = (
    PREAMBLE
    + """
from holmespy import Rule

holmespy.start()  # HOLMES_LOOP=off: the parent never makes a watchdog
watcher = holmespy.current()

async def main():
    parked = await park_some(2)
    before = watcher.stacks.watchdog is None
    pid = os.fork()
    if pid == 0:
        child = holmespy.current()
        child.reconfigure(loop=Rule(min=500, diff=100, abs=1000))  # the child turns it on
        wait_for(lambda: child.stacks.watchdog is not None, "child watchdog made")
        dog = child.stacks.watchdog
        inherited = dog.discover()
        child_loop, _ = loop_in_thread("child-loop")
        dog.discover()
        print(json.dumps({"parent_had_none": before, "inherited": inherited,
                          "loops": dog.status()["loops"]}))
        sys.stdout.flush()
        os._exit(0)
    _, code = await asyncio.to_thread(os.waitpid, pid, 0)
    assert os.waitstatus_to_exitcode(code) == 0, code
    for task in parked:
        task.cancel()

asyncio.run(main())
holmespy.stop()
"""
)


def test_the_loop_a_child_was_forked_inside_is_known_even_if_no_watchdog_existed_then(
    run_program: RunProgram,
) -> None:
    # The watchdog is made lazily, so a fork can come before its module is imported: the
    # fork hook that notes the loop is registered at start-up (holmespy.loopstack).
    run = run_program(FORKED_FROM_INSIDE_A_LOOP_BEFORE_ANY_WATCHDOG, HOLMES_LOOP="off")
    out = json.loads(run.proc.stdout.strip().splitlines()[-1])
    assert out == {"parent_had_none": True, "inherited": 0, "loops": 1}
