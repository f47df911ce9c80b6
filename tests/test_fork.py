"""Prefork servers: after os.fork() the child has its own working watcher."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.conftest import RunProgram

pytestmark = pytest.mark.timeout(60)

PREFORK = """
import os, threading, time
import holmespy

holmespy.start()
parent = os.getpid()
time.sleep(0.3)

pid = os.fork()
if pid == 0:
    # The worker: a fresh watcher, its own pid, then a thread leak of its own.
    status = holmespy.status()
    assert status.pid == os.getpid() != parent, status
    deadline = time.monotonic() + 30  # warm-up in the child: five ticks, however slow the machine
    while holmespy.status().ticks < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert holmespy.status().ticks >= 5, holmespy.status()
    never = threading.Event()
    for n in range(40):
        threading.Thread(target=never.wait, name=f"child-leak-{n}", daemon=True).start()
    time.sleep(1.0)
    print("child event:", holmespy.status().last_event, flush=True)
    os._exit(0 if holmespy.status().events == 1 else 3)
_, code = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(code) == 0, code
assert holmespy.status().pid == parent and holmespy.status().running
print("child", pid, "parent", parent)
"""


def test_forked_child_gets_its_own_watcher_and_writes_its_own_event(
    run_program: RunProgram,
) -> None:
    run = run_program(
        PREFORK,
        HOLMES_INTERVAL="100ms",
        HOLMES_THREAD="min=10,diff=25,abs=70",
        HOLMES_CPU="off",
        HOLMES_MEM="off",
        HOLMES_GCHEAP="off",
    )
    child = int(run.proc.stdout.split("child ")[-1].split()[0])
    bundles = run.bundles("thread")
    assert len(bundles) == 1, run.proc.stdout + run.proc.stderr
    event = bundles[0].event
    assert event["pid"] == child
    assert "child-leak-" in bundles[0].text("threads.txt")


NATIVE_IDS = """
import os, threading, time
from holmespy.profilers.cpu import capture_cpu
from holmespy.profilers.threads import format_threads

def burn_in_main(seconds):
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += sum(i * i for i in range(1000))
    return n

pid = os.fork()
if pid == 0:
    me = os.getpid()
    header = next(l for l in format_threads().splitlines() if "(main thread)" in l)
    print("main header:", header, flush=True)
    box = []
    def profile():
        box.append(capture_cpu(1.0, engine="sampler", exclude_threads={threading.get_ident()}))
    profiler = threading.Thread(target=profile)
    profiler.start()
    burn_in_main(1.5)
    profiler.join()
    capture = box[0]
    by_thread = {}
    col = [t.type for t in capture.profile.sample_types].index("cpu")
    for sample in capture.profile.samples:
        name = sample.labels["thread"]
        by_thread[name] = by_thread.get(name, 0) + sample.values[col]
    print("child", me, "cpu by thread", by_thread, flush=True)
    os._exit(0)
_, code = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(code) == 0, code
"""


def test_a_forked_childs_main_thread_has_its_own_native_id_and_cpu_clock(
    run_program: RunProgram,
) -> None:
    # Python 3.11 keeps the parent's native id for the thread that forked: the
    # dump named the parent's thread and the sampler read the parent's clock.
    run = run_program(NATIVE_IDS, HOLMES_ENABLE="0")
    out = run.proc.stdout
    child = int(out.split("child ")[-1].split()[0])
    assert f"native_id={child} " in out.split("main header:")[1].splitlines()[0], out
    cpu_by_thread = eval(out.split("cpu by thread ")[1].splitlines()[0])  # a dict literal
    # With the parent's id the sampler read no clock at all for it: 0 ns.
    assert cpu_by_thread.get("MainThread", 0) > 0, out


LOCKS_HELD_AT_FORK = """
import asyncio, json, os, sys, threading
from pathlib import Path
from holmespy import bundle, loops

loop = asyncio.new_event_loop()
threading.Thread(target=loop.run_forever, name="parent-loop", daemon=True).start()

async def park():
    await asyncio.sleep(3600)

async def spawn():
    return [asyncio.create_task(park()) for _ in range(3)]

parked = asyncio.run_coroutine_threadsafe(spawn(), loop).result(10)
parent_count = loops.count_tasks()

# As if a thread of the parent were inside each lock at the moment of the fork.
held = [bundle._stamp_lock, getattr(loops._REGISTRY, "_lock", None)]
held = [lock for lock in held if lock is not None]
for lock in held:
    lock.acquire()
pid = os.fork()
if pid == 0:
    child_count = loops.count_tasks()  # the parent's loop runs in no thread of the child
    event_id = bundle.new_event_id("thread")
    with bundle.BundleWriter(Path(sys.argv[0]).parent / "dumps", "forked", event_id) as writer:
        published = writer.publish({"id": event_id, "service": "forked"})
    print(json.dumps({"parent": parent_count, "child": child_count, "published": str(published)}))
    sys.stdout.flush()
    os._exit(0)
for lock in held:
    lock.release()
_, code = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(code) == 0, code
"""


def test_a_child_forked_while_holmespy_held_its_locks_counts_and_publishes(
    run_program: RunProgram,
) -> None:
    # A hang here (the run's timeout) would be a lock copied locked into the child.
    run = run_program(LOCKS_HELD_AT_FORK, HOLMES_ENABLE="0")
    out = json.loads(run.proc.stdout.strip().splitlines()[-1])
    assert out["parent"] == 3
    assert Path(out["published"], "event.json").is_file()
    if sys.version_info >= (3, 14):
        assert out["child"] == 0  # per-thread lists: only loops running in the child count
    else:
        assert out["child"] == 3  # the registry's size: the child's copies of the tasks


TEMPFILE_LOCK_HELD_AT_FORK = """
import os, sys, tempfile, time
import holmespy

holmespy.start()
# Right after start(), another thread of the host is inside tempfile's first use
# (its first mkdtemp, say) when the host forks: the child gets that module lock
# locked, and nobody will ever release it there.
tempfile._once_lock.acquire()
pid = os.fork()
if pid == 0:
    # The child's watcher salvages the dump folder and the temp folder before its
    # first tick: it must not wait on tempfile's lock.
    deadline = time.monotonic() + 30
    while holmespy.status().ticks < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    print("child ticks:", holmespy.status().ticks, flush=True)
    os._exit(0 if holmespy.status().ticks >= 3 else 3)
tempfile._once_lock.release()
_, code = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(code))
"""


def test_a_child_forked_while_the_host_held_tempfiles_lock_still_watches(
    run_program: RunProgram,
) -> None:
    # examples/prefork_spin.py hung so: the parent's watcher was in tempfile.gettempdir()
    # when the host forked, and each worker's watcher then waited on that lock forever.
    run = run_program(TEMPFILE_LOCK_HELD_AT_FORK, HOLMES_INTERVAL="50ms")
    assert "child ticks:" in run.proc.stdout, run.proc.stdout + run.proc.stderr
