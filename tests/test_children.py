"""Child processes: which get a watcher, when, and under which name; what a host can see.

A worker made by a known worker maker (gunicorn, multiprocessing) is watched
at once; a child about to exec never is; any other forked child once it
shows it lives on. A spawned multiprocessing child is named after the
server the user started, and multiprocessing's helpers are left alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from test_cli_support import clean_env, script

from holmespy import fork
from holmespy.config import default_service
from tests.conftest import ROOT, RunProgram

pytestmark = pytest.mark.timeout(120)


# -- what a process is, from its command line --


@pytest.mark.parametrize(
    ("orig_argv", "target"),
    [
        (["python", "app.py", "-c", "x"], ("script", "app.py")),
        (["python", "-X", "dev", "-W", "error", "-c", "pass", "a"], ("-c", "pass")),
        (["python", "-I", "-m", "uvicorn", "app:app"], ("-m", "uvicorn")),
        (["python", "-mhttp.server"], ("-m", "http.server")),
        (["python", "-"], ("script", "-")),
        (["python"], ("", "")),
        (["python", "-c"], ("", "")),
    ],
)
def test_interpreter_target_reads_past_options_and_their_values(
    orig_argv: list[str], target: tuple[str, str]
) -> None:
    assert fork.interpreter_target(orig_argv) == target


SPAWN_CHILD = [
    "python",
    "-c",
    "from multiprocessing.spawn import spawn_main; spawn_main(tracker_fd=5, pipe_handle=7)",
    "--multiprocessing-fork",
]
TRACKER = ["python", "-B", "-c", "from multiprocessing.resource_tracker import main;main(5)"]
FORKSERVER = ["python", "-c", "from multiprocessing.forkserver import main; main(3, 4, [])"]
FORKSERVER_313 = [  # 3.13+: the server gets its parent's argv after the code
    "python",
    "-c",
    "import sys; from multiprocessing.forkserver import main; main(3, 4, ['__main__'],"
    " sys_argv=sys.argv[1:], **{})",
    "/srv/server.py",
]


@pytest.mark.parametrize(
    ("orig_argv", "argv", "role"),
    [
        pytest.param(["python", "app.py"], ["app.py"], fork.Role.PROGRAM, id="a script"),
        pytest.param(["python", "-c", "pass"], ["-c"], fork.Role.PROGRAM, id="python -c"),
        pytest.param(SPAWN_CHILD, fork.SPAWN_ARGV, fork.Role.SPAWN_BOOTSTRAP, id="spawned"),
        pytest.param(
            SPAWN_CHILD, ["/venv/bin/uvicorn", "--workers", "2"], fork.Role.PROGRAM, id="prepared"
        ),
        pytest.param(TRACKER, ["-c"], fork.Role.HELPER, id="resource tracker"),
        pytest.param(FORKSERVER, ["-c"], fork.Role.FORKSERVER, id="fork server"),
        pytest.param(
            FORKSERVER_313, ["-c", "/srv/server.py"], fork.Role.FORKSERVER, id="3.13 fork server"
        ),
    ],
)
def test_process_role_from_the_command_line(
    orig_argv: list[str], argv: list[str], role: fork.Role
) -> None:
    assert fork.process_role(orig_argv, argv) is role


def frame_in(module: str, function: str) -> FrameType:
    """A real frame of a function named `function` in a module named `module`."""
    namespace: dict[str, Any] = {"__name__": module, "sys": sys}
    exec(f"def {function}():\n    return sys._getframe()\n", namespace)
    frame: FrameType = namespace[function]()
    return frame


def test_a_fork_server_child_is_a_program_and_the_server_is_not() -> None:
    serving = frame_in("multiprocessing.forkserver", "_serve_one")
    assert fork.process_role(FORKSERVER, ["-c"], serving) is fork.Role.PROGRAM
    elsewhere = frame_in("multiprocessing.forkserver", "main")
    assert fork.process_role(FORKSERVER, ["-c"], elsewhere) is fork.Role.FORKSERVER


@pytest.mark.parametrize(
    ("module", "function", "kind"),
    [
        ("gunicorn.arbiter", "spawn_worker", fork.ForkKind.WORKER),
        ("gunicorn.arbiter", "reexec", fork.ForkKind.EXEC),
        ("multiprocessing.popen_fork", "_launch", fork.ForkKind.WORKER),
        ("subprocess", "_execute_child", fork.ForkKind.EXEC),
        ("tornado.process", "fork_processes", fork.ForkKind.WORKER),
        ("__main__", "spawn_worker", fork.ForkKind.UNKNOWN),
        ("myserver", "prefork", fork.ForkKind.UNKNOWN),
    ],
)
def test_fork_kind_by_the_function_that_forked(
    module: str, function: str, kind: fork.ForkKind
) -> None:
    assert fork.fork_kind(frame_in(module, function)) is kind


def test_a_fork_from_c_is_an_embedding_servers_worker() -> None:
    # uWSGI and mod_wsgi fork in C and run the fork hooks: no Python caller.
    assert fork.fork_kind(None) is fork.ForkKind.WORKER


def test_a_gevent_fork_is_classified_by_who_called_it() -> None:
    namespace: dict[str, Any] = {"__name__": "gevent.os", "sys": sys}
    exec("def fork():\n    return sys._getframe()\n", namespace)
    arbiter: dict[str, Any] = {"__name__": "gunicorn.arbiter", "fork": namespace["fork"]}
    exec("def spawn_worker():\n    return fork()\n", arbiter)
    assert fork.fork_kind(arbiter["spawn_worker"]()) is fork.ForkKind.WORKER


@pytest.mark.parametrize(
    ("argv", "orig_argv", "service"),
    [
        pytest.param(["/srv/venv/bin/gunicorn", "app:app"], None, "gunicorn", id="console script"),
        pytest.param(["app.py"], None, "app", id="script"),
        pytest.param(["-m"], ["python", "-m", "uvicorn", "app:app"], "uvicorn", id="-m early"),
        pytest.param(["/lib/uvicorn/__main__.py"], None, "uvicorn", id="-m package, late"),
        pytest.param(["-m"], ["python", "-X", "dev", "-m", "aiohttp.web"], "web", id="-m module"),
        pytest.param(["/lib/aiohttp/web.py"], None, "web", id="-m module, late"),
        pytest.param(fork.SPAWN_ARGV, SPAWN_CHILD, "python", id="spawned, before prepare"),
        pytest.param(["-c"], ["python", "-c", "pass"], "python", id="python -c"),
    ],
)
def test_default_service_is_the_program_the_user_started(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], orig_argv: list[str] | None, service: str
) -> None:
    # `-m` names agree whether read early (a sitecustomize) or once runpy ran.
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.setattr(sys, "orig_argv", orig_argv or ["python", *argv])
    assert default_service() == service


@pytest.mark.parametrize("argv", [None, [], [None], ["-c"], "not-a-list", [b"bytes.py"]])
def test_a_host_that_mangled_sys_argv_is_still_a_program_named_python(
    monkeypatch: pytest.MonkeyPatch, argv: object
) -> None:
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.setattr(sys, "orig_argv", ["python", "-c", "pass"])
    assert fork.process_role() is fork.Role.PROGRAM
    assert default_service() == "python"


def test_a_mangled_orig_argv_is_an_ordinary_program(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "orig_argv", [None, 3, "-c", None])
    assert fork.process_role() is fork.Role.PROGRAM


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_lazy_start_waits_for_a_collection_after_the_grace_period() -> None:
    import gc

    started: list[str] = []
    clock = FakeClock()
    lazy = fork.LazyStart(lambda: started.append("started"), grace=1.0, clock=clock).arm()
    try:
        gc.collect()
        assert lazy.armed  # a child that execs or exits now sees nothing
        assert started == []
        clock.now = 1.0
        gc.collect()
        deadline = time.monotonic() + 30
        while not started:  # started on a thread of its own, never inside the collection
            assert time.monotonic() < deadline, "the lazy start never ran"
            time.sleep(0.01)
        assert not lazy.armed
        assert lazy._on_gc not in gc.callbacks
        gc.collect()
        lazy.fire()
        assert started == ["started"]  # once
    finally:
        lazy.disarm()


def test_lazy_start_never_hides_a_collection_from_the_host_callback_after_it() -> None:
    # The collector calls gc.callbacks by index: had ours removed itself while
    # called, the host's own callback would miss that collection's "stop".
    import gc

    started = threading.Event()
    phases: list[str] = []

    def host_callback(phase: str, info: dict[str, Any]) -> None:
        phases.append(phase)

    lazy = fork.LazyStart(started.set, grace=0.0).arm()
    gc.callbacks.append(host_callback)
    try:
        gc.collect()
        assert started.wait(30)
        assert phases == ["start", "stop"]
        deadline = time.monotonic() + 30
        while lazy._on_gc in gc.callbacks:  # removed by the start's own thread
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        gc.callbacks.remove(host_callback)
        lazy.disarm()


def test_lazy_start_fires_at_once_on_an_api_call_and_only_in_its_own_process() -> None:
    started: list[int] = []
    lazy = fork.LazyStart(lambda: started.append(os.getpid()), grace=3600).arm()
    lazy.pid = -1  # as if armed by the parent of a later fork
    lazy.fire()
    assert started == []
    lazy.pid = os.getpid()
    lazy.fire()
    assert started == [os.getpid()]
    assert not lazy.armed


# -- real forks --

QUIET = {
    "HOLMES_INTERVAL": "100ms",
    "HOLMES_CPU": "off",
    "HOLMES_MEM": "off",
    "HOLMES_TASK": "off",
    "HOLMES_GCHEAP": "off",
}

THREADS_AFTER_FORK = """
import os, sys, threading, time
import holmespy

holmespy.start()
while holmespy.status().ticks < 3:
    time.sleep(0.01)
assert threading.active_count() > 1  # holmespy's threads, in the parent
codes = []
for _ in range(20):
    pid = os.fork()
    if pid == 0:
        # What CPython's own fork tests check, right after fork().
        alone = len(sys._current_frames()) == 1 and threading.active_count() == 1
        os._exit(51 if alone and len(os.listdir("/proc/self/task")) == 1 else 52)
    codes.append(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
print("codes", sorted(set(codes)))
"""


def test_a_forked_child_sees_no_holmespy_thread_right_after_fork(run_program: RunProgram) -> None:
    run = run_program(THREADS_AFTER_FORK, **QUIET)
    assert "codes [51]" in run.proc.stdout, run.proc.stdout + run.proc.stderr


PREEXEC = """
import os, subprocess, sys, time
import holmespy

holmespy.start()
while holmespy.status().ticks < 3:
    time.sleep(0.01)

def alone():
    # Runs in the child between fork() and exec(), after the fork hooks.
    if len(os.listdir("/proc/self/task")) != 1:
        raise RuntimeError("a thread was started in a preexec_fn child")

for _ in range(5):
    subprocess.run([sys.executable, "-c", "pass"], preexec_fn=alone, check=True)
print("preexec children alone")
"""


def test_a_preexec_fn_child_gets_no_watcher(run_program: RunProgram) -> None:
    run = run_program(PREEXEC, **QUIET)
    assert "preexec children alone" in run.proc.stdout, run.proc.stderr


LIVES_ON = """
import os, sys, threading, time

import holmespy

holmespy.start()
while holmespy.status().ticks < 3:
    time.sleep(0.01)
pid = os.fork()
if pid == 0:
    # A hand-made prefork worker that never calls holmespy: it serves, it
    # allocates, and after a while it leaks threads.
    print("worker", os.getpid(), flush=True)
    cache = []
    deadline = time.monotonic() + 60
    while len(os.listdir("/proc/self/task")) == 1:
        assert time.monotonic() < deadline, "no watcher started in the worker"
        cache.append([{} for _ in range(1000)])  # it loads what it will serve
        time.sleep(0.01)
    never = threading.Event()
    for n in range(40):
        threading.Thread(target=never.wait, name=f"worker-leak-{n}", daemon=True).start()
    dumps = os.environ["HOLMES_DUMP_PATH"]
    while not any(  # published: renamed from its `.tmp-` name
        "-thread-" in name and not name.startswith(".") for _, dirs, _ in os.walk(dumps)
        for name in dirs
    ):
        assert time.monotonic() < deadline, "no event from the worker"
        time.sleep(0.05)
    os._exit(0)
os.waitpid(pid, 0)
"""


def test_a_forked_child_that_lives_on_gets_its_watcher_without_calling_holmespy(
    run_program: RunProgram,
) -> None:
    run = run_program(LIVES_ON, HOLMES_THREAD="min=10,diff=25,abs=30", **QUIET)
    worker = int(run.proc.stdout.split("worker ")[1].split()[0])
    (bundle,) = run.bundles("thread")
    assert bundle.event["pid"] == worker
    assert "worker-leak-" in bundle.text("threads.txt")


# -- descriptors --

FDS_ACROSS_FORK = """
import json, os, sys, time
import holmespy

def fds():
    out = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            out[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            pass  # the listing's own descriptor, closed by now
    return out

holmespy.start()
while holmespy.status().ticks < 1:
    time.sleep(0.01)
parent = fds()
read, write = os.pipe()
pid = os.fork()
if pid == 0:
    right_after = fds()
    holmespy.status()  # the child lives on: its watcher starts and ticks
    while holmespy.status().ticks < 1:
        time.sleep(0.01)
    os.write(write, json.dumps({"right_after": right_after, "watched": fds()}).encode())
    os._exit(0)
os.close(write)
child = json.loads(os.read(read, 1 << 20))
print(json.dumps({"parent": parent, "pipe": [str(read), str(write)], **child}))
"""


def test_holmespy_keeps_no_descriptor_in_the_parent_or_a_forked_child(
    run_program: RunProgram,
) -> None:
    # HOLMES_INTERVAL=1h: one tick, then idle, so a listing never races a read.
    run = run_program(FDS_ACROSS_FORK, **{**QUIET, "HOLMES_INTERVAL": "1h", "HOLMES_GCHEAP": "on"})
    seen = json.loads(run.proc.stdout)
    pipe, parent = set(seen["pipe"]), set(seen["parent"])
    assert set(seen["right_after"]) - pipe == parent
    assert set(seen["watched"]) - pipe == parent
    for name in ("parent", "right_after", "watched"):
        assert not [t for t in seen[name].values() if t.startswith("/proc/")], seen[name]


def test_a_program_under_holmespy_run_sees_only_its_own_descriptors(tmp_path: Path) -> None:
    program = (
        "import json, os, sys, time, holmespy\n"
        "while holmespy.status().ticks < 1:\n"
        "    time.sleep(0.01)\n"
        "print(json.dumps(sorted(int(fd) for fd in os.listdir('/proc/self/fd'))))\n"
    )
    env = clean_env(HOLMES_DUMP_PATH=str(tmp_path), HOLMES_INTERVAL="1h", HOLMES_GCHEAP="on")

    result = script("run", "--", sys.executable, "-c", program, env=env)

    assert result.code == 0, result.err
    assert json.loads(result.out) == [0, 1, 2, 3]  # 3: the listing's own


# -- spawned children --

SPAWN_SERVER = """\
import json, multiprocessing, os, sys, threading, time


def worker(dumps):
    # A server's worker: it leaks threads, and its event must be found under
    # the server's name.
    never = threading.Event()
    for n in range(40):
        threading.Thread(target=never.wait, name=f"spawned-leak-{n}", daemon=True).start()
    deadline = time.monotonic() + 60
    mine = f'"pid": {os.getpid()},'
    while not any(
        mine in open(os.path.join(d, "event.json"), encoding="utf-8").read()
        for d, _, files in os.walk(dumps)
        if "event.json" in files and not os.path.basename(d).startswith(".")
    ):
        assert time.monotonic() < deadline, "no event from worker %d" % os.getpid()
        time.sleep(0.05)


def threads_of(pid):
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        return int(next(line for line in f if line.startswith("Threads:")).split()[1])


if __name__ == "__main__":
    method = sys.argv[1]
    ctx = multiprocessing.get_context(method)
    workers = [ctx.Process(target=worker, args=(os.environ["HOLMES_DUMP_PATH"],)) for _ in range(2)]
    for w in workers:
        w.start()
    from multiprocessing import resource_tracker
    helpers = {"resource_tracker": resource_tracker._resource_tracker._pid}
    if method == "forkserver":
        from multiprocessing import forkserver
        helpers["forkserver"] = forkserver._forkserver._forkserver_pid
    helper_threads = {name: threads_of(pid) for name, pid in helpers.items()}
    for w in workers:
        w.join(90)
    print(json.dumps({
        "helper_threads": helper_threads,
        "workers": {w.pid: w.exitcode for w in workers},
    }))
"""


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_spawned_workers_are_named_after_the_server_and_helpers_are_not_watched(
    tmp_path: Path, method: str
) -> None:
    server = tmp_path / "server.py"
    server.write_text(SPAWN_SERVER, encoding="utf-8")
    dumps = tmp_path / "dumps"
    env = clean_env(
        HOLMES_DUMP_PATH=str(dumps),
        HOLMES_THREAD="min=10,diff=25,abs=30,cooldown=1m",
        PYTHONPATH=str(ROOT / "src"),
        **QUIET,
    )

    result = script("run", "--", sys.executable, str(server), method, env=env, timeout=100)

    assert result.code == 0, result.out + result.err
    seen = json.loads(result.out)
    assert set(seen["workers"].values()) == {0}, seen
    events = [json.loads(b.read_text()) for b in dumps.glob("*/*/[!.]*/event.json")]
    services = {e["pid"]: e["service"] for e in events}
    assert {services.get(int(pid)) for pid in seen["workers"]} == {"server"}, services
    assert set(seen["helper_threads"].values()) == {1}, seen  # no holmespy thread in a helper


# -- explicit encodings --

ENCODING_STRICT = """
import gc, threading, time
import holmespy
from holmespy.limits import detect_limits

detect_limits()
never = threading.Event()
for _ in range(40):
    threading.Thread(target=never.wait, daemon=True).start()
holmespy.start()  # thread and mem fire on the first tick, cpu on the second
deadline = time.monotonic() + 60
while holmespy.status().events < 3:
    assert time.monotonic() < deadline, holmespy.status()
    gc.collect()  # the gcheap rule's reading, on this thread
    time.sleep(0.05)
status = holmespy.status()
assert status.errors == 0 and status.capture_failures == 0, status
"""


def test_no_default_encoding_anywhere_on_the_watcher_or_cli_path(tmp_path: Path) -> None:
    strict = [sys.executable, "-X", "warn_default_encoding", "-W", "error::EncodingWarning"]
    program = tmp_path / "strict.py"
    program.write_text(ENCODING_STRICT, encoding="utf-8")
    dumps = str(tmp_path / "dumps")
    env = clean_env(
        HOLMES_DUMP_PATH=dumps,
        PYTHONPATH=str(ROOT / "src"),
        HOLMES_INTERVAL="100ms",
        HOLMES_THREAD="min=10,diff=25,abs=30",
        HOLMES_MEM="min=0,diff=0,abs=0",
        HOLMES_CPU="min=0,diff=0,abs=0",
        HOLMES_TASK="off",
        HOLMES_GCHEAP="on",
        HOLMES_CPU_PROFILE_SECONDS="0.5",
        HOLMES_HEAP_SECONDS="0.3",
    )

    def run(*args: str) -> None:
        done = subprocess.run(
            [*strict, *args], env=env, capture_output=True, text=True, timeout=90, check=False
        )
        assert "EncodingWarning" not in done.stderr, (args, done.stderr)
        assert done.returncode in (0, 1), (args, done.stdout + done.stderr)  # doctor may warn

    run(str(program))
    events = sorted(p.parent for p in Path(dumps).glob("*/*/[!.]*/event.json"))
    assert len(events) == 3
    run("-m", "holmespy", "ls", "--from", dumps)
    for event in events:
        run("-m", "holmespy", "show", str(event))
    (profile,) = Path(dumps).glob("*/*/*/cpu.pb.gz")
    run("-m", "holmespy", "flame", str(profile), "-o", str(tmp_path / "flame.html"))
    run("-m", "holmespy", "doctor")
