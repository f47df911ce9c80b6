"""A fork while one of holmespy's threads is importing a module lazily.

Python keeps a lock per module while importing it, and a fork does not reset
it: a child forked in the middle of such an import inherits the module half
made, locked by a thread it does not have, and whoever imports it there waits
forever. holmespy's threads import only `with importing:` and a fork waits for
that import (`holmespy.lazyimport`).
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import RunProgram
from tests.s3_server import SeaweedFS

pytestmark = pytest.mark.timeout(120)

# The first thread event makes a capture lane import holmespy.profilers.threads
# (the thread dump); this finder makes that import wait on `release`.
HOLD_A_LANES_IMPORT = """
import faulthandler, importlib.abc, importlib.machinery, json, os, sys, threading, time

TARGET = "holmespy.profilers.threads"
entered, release = threading.Event(), threading.Event()


class Held(importlib.abc.Loader):
    def __init__(self, real):
        self.real = real

    def create_module(self, spec):
        return self.real.create_module(spec)

    def exec_module(self, module):
        entered.set()  # the lane holds the module's import lock from here on
        release.wait()
        self.real.exec_module(module)


class HoldOnHolmespysThreads(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != TARGET or not threading.current_thread().name.startswith("holmespy"):
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        spec.loader = Held(spec.loader)
        return spec


sys.meta_path.insert(0, HoldOnHolmespysThreads())
import holmespy

holmespy.start()
# A first fork, over at once: before it holmespy loads its capture machinery (but
# not the profilers), so the attack below meets the guard's own fork hook.
first = os.fork()
if first == 0:
    os._exit(0)
os.waitpid(first, 0)
assert TARGET not in sys.modules

never = threading.Event()
for n in range(30):  # the thread rule fires, and a lane starts the thread dump
    threading.Thread(target=never.wait, name=f"leak-{n}", daemon=True).start()
assert entered.wait(30), "no lane imported " + TARGET
main = threading.get_ident()


def release_once_the_fork_waits():
    # The fork waits for the import in holmespy.lazyimport: let the import end then.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        frame = sys._current_frames().get(main)
        if frame is not None and frame.f_code.co_filename.endswith("lazyimport.py"):
            break
        time.sleep(0.001)
    release.set()


threading.Thread(target=release_once_the_fork_waits, daemon=True).start()
pid = os.fork()
if pid == 0:
    faulthandler.dump_traceback_later(20, exit=True)  # a hang: the stacks, then exit 1
    import holmespy.profilers.threads as threads  # as the host's code in the child would

    whole = hasattr(threads, "format_threads")
    deadline = time.monotonic() + 30  # and the child's own watcher lives on
    while holmespy.status().ticks < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    status = holmespy.status()
    print(json.dumps({"whole": whole, "ticks": status.ticks, "errors": status.errors,
                      "last_error": status.last_error}), flush=True)
    os._exit(0)
release.set()  # (had the fork not waited, the lane's import would go on only now)
_, code = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(code))
"""


def test_a_fork_while_a_lane_imports_waits_and_the_child_gets_the_module_whole(
    run_program: RunProgram,
) -> None:
    # Unguarded, the child's main thread hung importing the module (3.11 to 3.15).
    run = run_program(
        HOLD_A_LANES_IMPORT,
        HOLMES_INTERVAL="20ms",
        HOLMES_THREAD="min=1,diff=1000,abs=20,cooldown=1h",
        HOLMES_CPU="off",
        HOLMES_MEM="off",
        HOLMES_GCHEAP="off",
    )
    child = json.loads(run.proc.stdout.strip().splitlines()[-1])
    assert child["whole"], run.proc.stderr
    assert child["ticks"] >= 3, child
    assert (child["errors"], child["last_error"]) == (0, None)


IMPORT_THAT_NEVER_ENDS = """
import os, sys, threading
from holmespy.lazyimport import ImportGuard

guard = ImportGuard(fork_wait=0.05)
inside, never = threading.Event(), threading.Event()


def stuck():
    with guard:  # an import that waits on the forking thread: it would never end
        inside.set()
        never.wait()


threading.Thread(target=stuck, daemon=True).start()
assert inside.wait(30)
pid = os.fork()
if pid == 0:
    with guard:  # free in the child: the thread that held it is not there
        os._exit(0 if guard.held() else 3)
_, code = os.waitpid(pid, 0)
print("not waited:", guard.forks_not_waited, "child:", os.waitstatus_to_exitcode(code))
"""


def test_a_fork_waits_no_longer_than_fork_wait_for_an_import_that_cannot_end(
    run_program: RunProgram,
) -> None:
    # Such an import would deadlock with the fork (say, it needs a lock the forking
    # thread holds): the fork goes on after `fork_wait`, and says so.
    run = run_program(IMPORT_THAT_NEVER_ENDS)
    assert "not waited: 1 child: 0" in run.proc.stdout, run.proc.stdout + run.proc.stderr


IMPORT_NEEDS_LOGGINGS_LOCK = """
import os, sys, threading, time
from holmespy.lazyimport import ImportGuard

assert "logging" not in sys.modules
guard = ImportGuard(fork_wait=30)
import logging  # its fork hook, which holds logging's lock, is newer than the guard's

inside, go = threading.Event(), threading.Event()


def import_that_logs():
    with guard:  # a module whose body calls logging.getLogger(), as most do
        inside.set()
        go.wait()
        logging.getLogger("imported.module")


threading.Thread(target=import_that_logs, daemon=True).start()
assert inside.wait(30)
main = threading.get_ident()


def go_once_the_fork_waits():
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        frame = sys._current_frames().get(main)
        if frame is not None and frame.f_code.co_filename.endswith("lazyimport.py"):
            break
        time.sleep(0.001)
    go.set()


threading.Thread(target=go_once_the_fork_waits, daemon=True).start()
pid = os.fork()
if pid == 0:
    os._exit(0)
os.waitpid(pid, 0)
print("not waited:", guard.forks_not_waited)
"""


def test_a_fork_while_a_lazy_import_needs_loggings_lock_does_not_deadlock(
    run_program: RunProgram,
) -> None:
    # Had logging's fork hook run first, the fork would hold logging's lock while
    # waiting for the import, and the import would wait for logging's lock: stuck
    # until fork_wait (30 s) ran out. The guard's hooks are registered again once
    # logging is loaded, so they run before logging's.
    run = run_program(IMPORT_NEEDS_LOGGINGS_LOCK)
    assert "not waited: 0" in run.proc.stdout, run.proc.stdout + run.proc.stderr


# Every rule fires (tasks, threads, memory, CPU) and the events go to S3: the
# watcher, both capture lanes, the profilers and the uploader all load what
# they need; an audit hook lists what any holmespy thread imported unguarded.
EVERY_LAZY_IMPORT = """
import json, sys, threading, time
from holmespy.lazyimport import importing

unguarded = []


def audit(event, args):
    if event == "import":
        thread = threading.current_thread()
        if thread.name.startswith("holmespy") and not importing.held():
            unguarded.append(f"{thread.name}: {args[0]}")


sys.addaudithook(audit)
import asyncio
import holmespy

loop = asyncio.new_event_loop()
threading.Thread(target=loop.run_forever, name="host-loop", daemon=True).start()
never = threading.Event()
for _ in range(10):
    asyncio.run_coroutine_threadsafe(asyncio.sleep(3600), loop)
holmespy.start()
deadline = time.monotonic() + 90
while time.monotonic() < deadline:
    sum(i * i for i in range(100_000))  # CPU for the cpu rule
    status = holmespy.status()
    if status.events >= 4 and status.storage.get("uploaded", 0) >= 4:
        break
status = holmespy.status()
holmespy.stop()
print(json.dumps({"unguarded": unguarded, "events": status.events,
                  "uploaded": status.storage.get("uploaded")}))
"""


def test_holmespys_threads_import_nothing_outside_the_guard(
    run_program: RunProgram, aws_env: SeaweedFS, bucket: str
) -> None:
    run = run_program(
        EVERY_LAZY_IMPORT,
        timeout=110,
        **aws_env.env(),
        HOLMES_STORAGE=f"s3://{bucket}/imports",
        HOLMES_INTERVAL="50ms",
        HOLMES_CPU="min=1,diff=1000,abs=1,cooldown=1h",
        HOLMES_THREAD="min=1,diff=1000,abs=2,cooldown=1h",
        HOLMES_TASK="min=1,diff=1000,abs=5,cooldown=1h",
        HOLMES_MEM="min=1,diff=1000,abs=1,cooldown=1h",
        HOLMES_MEM_LIMIT="64MiB",
        HOLMES_GCHEAP="off",
        HOLMES_CPU_PROFILE_SECONDS="1",
        HOLMES_HEAP_SECONDS="0.5",
    )
    result = json.loads(run.proc.stdout.strip().splitlines()[-1])
    assert result["events"] >= 4, result  # every path did run
    assert result["uploaded"] >= 4, result
    assert result["unguarded"] == [], "\n".join(result["unguarded"])


FIRST_FORK_OF_A_PROCESS_WITHOUT_LOGGING = """
import os, sys, warnings
import holmespy

warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: a fork of a threaded process

holmespy.start()
assert "logging" not in sys.modules  # holmespy loads logging only once the host has
pid = os.fork()  # the first fork loads the capture machinery, and logging with it
if pid == 0:
    os._exit(0)
os.waitpid(pid, 0)
import logging

assert logging._lock.acquire(blocking=False), "logging's lock is held"
logging._lock.release()
print("forked; logging loaded:", "logging" in sys.modules)
"""


def test_the_first_fork_of_a_process_without_logging_says_nothing_on_stderr(
    run_program: RunProgram,
) -> None:
    # logging, imported in the fork's own hooks, registered its hooks too late for
    # this fork's `before` but in time for its `after_in_parent`: that one released
    # a lock nobody took, and Python printed "Exception ignored ... cannot release
    # un-acquired lock" at every prefork server's first fork.
    run = run_program(FIRST_FORK_OF_A_PROCESS_WITHOUT_LOGGING, HOLMES_LOG_LEVEL="WARNING")
    assert "forked; logging loaded: True" in run.proc.stdout
    assert run.proc.stderr == "", run.proc.stderr


LOGGING_IMPORTED_WHILE_THE_FORK_WAITS = """
import os, sys, threading, time
from holmespy.lazyimport import ImportGuard

assert "logging" not in sys.modules
guard = ImportGuard(fork_wait=30)
inside, go = threading.Event(), threading.Event()


def import_logging_late():
    with guard:  # as a lazily loaded module that imports logging, once the fork waits
        inside.set()
        go.wait()
        import logging


threading.Thread(target=import_logging_late, daemon=True).start()
assert inside.wait(30)
main = threading.get_ident()


def go_once_the_fork_waits():
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        frame = sys._current_frames().get(main)
        if frame is not None and frame.f_code.co_filename.endswith("lazyimport.py"):
            break
        time.sleep(0.001)
    go.set()


threading.Thread(target=go_once_the_fork_waits, daemon=True).start()
pid = os.fork()
if pid == 0:
    import logging

    logging.getLogger("child").warning("the child logs")  # its lock is free there
    os._exit(0)
_, code = os.waitpid(pid, 0)
import logging

assert logging._lock.acquire(blocking=False), "logging's lock is held"
logging._lock.release()
print("child:", os.waitstatus_to_exitcode(code))
"""


def test_logging_imported_while_a_fork_waits_leaves_its_lock_as_it_found_it(
    run_program: RunProgram,
) -> None:
    run = run_program(LOGGING_IMPORTED_WHILE_THE_FORK_WAITS)
    assert "child: 0" in run.proc.stdout
    assert "Exception ignored" not in run.proc.stderr, run.proc.stderr


FORK_INSIDE_A_GUARDED_BLOCK = """
import os, sys
from holmespy.lazyimport import importing

with importing:  # as a module whose import forks
    pid = os.fork()
if pid == 0:
    with importing:  # the child's guard works, and is free once the block ended
        pass
    os._exit(0 if not importing.held() else 3)
_, code = os.waitpid(pid, 0)
print("child:", os.waitstatus_to_exitcode(code), "held:", importing.held())
"""


def test_a_fork_from_inside_a_guarded_block_leaves_both_guards_consistent(
    run_program: RunProgram,
) -> None:
    # The child's guard is new: held as deep as the forking thread was in it, so the
    # block's end releases it as in the parent (not "release unlocked lock").
    run = run_program(FORK_INSIDE_A_GUARDED_BLOCK)
    assert "child: 0 held: False" in run.proc.stdout, run.proc.stdout + run.proc.stderr
    assert "Error" not in run.proc.stderr, run.proc.stderr
