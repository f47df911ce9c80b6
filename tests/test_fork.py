"""Prefork servers: after os.fork() the child has its own working watcher."""

from __future__ import annotations

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
    time.sleep(1.2)  # warm-up in the child
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
