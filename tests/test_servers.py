"""holmespy in gunicorn, uvicorn and aiohttp as they really run, under real HTTP load.

Each test starts a real server on 127.0.0.1 (a free port), keeps a bounded
load on it, makes one worker misbehave through a route of the apps in
`tests/servers/`, and reads what holmespy wrote: the right rule, in the
worker that misbehaved, named after the server, naming the injected
function. Some use `holmespy run` (no code change), the others the two lines
in the app; docs/servers.md shows both.

Figures for docs/servers.md: `HOLMESPY_TEST_TIMINGS=/tmp/t.jsonl pytest
tests/test_servers.py` appends onset-to-event times to that file.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_cli_support import clean_env

from tests.servers.harness import (
    HERE,
    Load,
    Server,
    events,
    hottest_function,
    record,
    record_cut,
    record_timing,
    running,
    temps_of,
    wait_for_event,
)

pytest.importorskip("gunicorn", reason="the real-server tests need the test extra: gunicorn")
pytest.importorskip("uvicorn", reason="the real-server tests need the test extra: uvicorn")
pytest.importorskip("aiohttp", reason="the real-server tests need the test extra: aiohttp")

pytestmark = pytest.mark.timeout(180)

BIN = Path(sys.executable).parent
HOLMESPY = str(BIN / "holmespy")
GUNICORN_BIN = str(BIN / "gunicorn")
UVICORN = str(BIN / "uvicorn")


def _gunicorn() -> list[str]:
    from gunicorn.config import KNOWN_SETTINGS

    # gunicorn >= 25.1 opens a control socket in $HOME, shared by every
    # gunicorn of the machine (other test runs): not ours to open.
    known = {setting.name for setting in KNOWN_SETTINGS}
    flag = ["--no-control-socket"] if "control_socket_disable" in known else []
    return [GUNICORN_BIN, *flag]


GUNICORN = _gunicorn()

# Every rule off but the one under test; one core, so a spinning worker is
# at ~100 % whatever the machine; a 100 ms tick, so ten ticks arm `diff` in 1 s.
QUIET = {
    "HOLMES_INTERVAL": "100ms",
    "HOLMES_CPU_CORES": "1",
    "HOLMES_CPU": "off",
    "HOLMES_MEM": "off",
    "HOLMES_THREAD": "off",
    "HOLMES_TASK": "off",
    "HOLMES_GCHEAP": "off",
}
# A spike over a quiet baseline: fires on a worker burning >= 20 % of a core
# (min) once ten samples say what is usual (diff); `abs` is out of reach.
CPU_SPIKE = "min=20,diff=50,abs=1000,cooldown=1m"
THREAD_LEAK = "min=10,diff=25,abs=30,cooldown=1m"  # abs: fires from the first sample
TASK_PILEUP = "min=100,diff=25,abs=500,cooldown=1m"


@pytest.fixture
def dumps(tmp_path: Path) -> Path:
    return tmp_path / "dumps"


def server_env(dumps: Path, **rules: str) -> dict[str, str]:
    return clean_env(HOLMES_DUMP_PATH=str(dumps), **{**QUIET, **rules})


def threads_of(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        return int(next(line for line in status if line.startswith("Threads:")).split()[1])


def session_processes(session: int) -> dict[int, str]:
    """pid -> command line of every process of a session (a server and all it started)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_bytes()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat[stat.rindex(b")") + 2 :].split()[3]) == session:  # field 6: session id
            found[int(entry.name)] = cmdline.replace(b"\0", b" ").decode(errors="replace")
    return found


def test_gunicorn_sync_worker_spinning_writes_a_cpu_event_naming_the_hot_function(
    dumps: Path, tmp_path: Path
) -> None:
    env = server_env(dumps, HOLMES_CPU=CPU_SPIKE, HOLMES_CPU_PROFILE_SECONDS="1.5")

    def argv(port: int) -> list[str]:
        gunicorn = [*GUNICORN, "-w", "2", "-b", f"127.0.0.1:{port}", "wsgi_app:app"]
        return [HOLMESPY, "run", "--", *gunicorn]

    with running("gunicorn-sync", argv, env, tmp_path) as server, Load(server) as load:
        server.wait_warm(workers=2)
        onset = time.time()
        spun = server.get("/spin?n=3")
        event = wait_for_event(dumps, "cpu", rule="cpu", pid=spun["pid"])
        record_timing("gunicorn sync", "cpu", onset, event)

    assert event["service"] == "gunicorn"
    function, share = hottest_function(Path(event["_path"]) / "cpu.pb.gz")
    assert function.endswith("hot_spin"), (function, share, event["captures"]["cpu"])
    assert load.answered > 0, "the other worker went on serving"


def test_gunicorn_gthread_preloaded_thread_leak_writes_a_thread_event(
    dumps: Path, tmp_path: Path
) -> None:
    # The two lines only, in an app gunicorn imports once in the master
    # (--preload): each forked worker restarts its own watcher.
    env = server_env(dumps, HOLMES_THREAD=THREAD_LEAK)

    def argv(port: int) -> list[str]:
        return [
            *GUNICORN,
            *("-k", "gthread", "--threads", "4", "-w", "2", "--preload"),
            *("-b", f"127.0.0.1:{port}", "wsgi_app:app"),
        ]

    with running("gunicorn-gthread", argv, env, tmp_path) as server, Load(server):
        onset = time.time()
        leaked = server.get("/leak?n=40")
        event = wait_for_event(dumps, "thread", rule="thread", pid=leaked["pid"])
        record_timing("gunicorn gthread", "thread", onset, event)

    assert event["service"] == "gunicorn"
    assert event["value"] > 30
    threads = (Path(event["_path"]) / "threads.txt").read_text(encoding="utf-8")
    assert "leaked_thread_body" in threads
    assert "leaked-" in threads


def test_uvicorn_blocked_loop_writes_a_cpu_event_naming_the_hot_function(
    dumps: Path, tmp_path: Path
) -> None:
    env = server_env(dumps, HOLMES_CPU=CPU_SPIKE, HOLMES_CPU_PROFILE_SECONDS="1.5")

    def argv(port: int) -> list[str]:
        return [UVICORN, "--app-dir", str(HERE), "--port", str(port), "asgi_app:app"]

    with running("uvicorn", argv, env, tmp_path) as server, Load(server):
        (worker,) = server.wait_warm(workers=1)
        onset = time.time()
        spun = server.get("/spin?n=3")
        event = wait_for_event(dumps, "cpu", rule="cpu", pid=worker)
        record_timing("uvicorn", "cpu", onset, event)

    assert spun["pid"] == worker
    assert event["service"] == "uvicorn"
    function, share = hottest_function(Path(event["_path"]) / "cpu.pb.gz")
    assert function.endswith("hot_spin"), (function, share, event["captures"]["cpu"])


def test_uvicorn_two_spawned_workers_are_named_after_the_server(
    dumps: Path, tmp_path: Path
) -> None:
    # uvicorn --workers starts its workers with multiprocessing *spawn*:
    # holmespy run's sitecustomize runs there before sys.argv is restored.
    env = server_env(dumps, HOLMES_THREAD=THREAD_LEAK)

    def argv(port: int) -> list[str]:
        uvicorn = [UVICORN, "--workers", "2", "--app-dir", str(HERE), "--port", str(port)]
        return [HOLMESPY, "run", "--", *uvicorn, "asgi_app:app"]

    with running("uvicorn-workers", argv, env, tmp_path) as server, Load(server):
        onset = time.time()
        leaked = server.get("/leak?n=40")
        event = wait_for_event(dumps, "thread", rule="thread", pid=leaked["pid"])
        record_timing("uvicorn --workers 2", "thread", onset, event)
        helpers = {
            pid: threads_of(pid)
            for pid, cmd in session_processes(server.proc.pid).items()
            if "multiprocessing.resource_tracker" in cmd
        }

    assert event["service"] == "uvicorn"
    threads = (Path(event["_path"]) / "threads.txt").read_text(encoding="utf-8")
    assert "leaked_thread_body" in threads
    listed = subprocess.run(
        [HOLMESPY, "ls", "--from", str(dumps), "--service", "uvicorn", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert event["id"] in {e["id"] for e in json.loads(listed.stdout)}
    assert helpers, "uvicorn's resource tracker was not found"
    assert set(helpers.values()) == {1}, f"a helper got holmespy's threads: {helpers}"
    assert not [e for e in events(dumps) if e["service"] == "python"]


def aiohttp_argv(port: int) -> list[str]:
    return [HOLMESPY, "run", "--", sys.executable, str(HERE / "aiohttp_app.py"), str(port)]


def test_aiohttp_blocking_handler_writes_a_cpu_event_naming_it(dumps: Path, tmp_path: Path) -> None:
    env = server_env(dumps, HOLMES_CPU=CPU_SPIKE, HOLMES_CPU_PROFILE_SECONDS="1.5")

    with running("aiohttp-cpu", aiohttp_argv, env, tmp_path) as server, Load(server):
        (worker,) = server.wait_warm(workers=1)
        onset = time.time()
        server.get("/spin?n=3")
        event = wait_for_event(dumps, "cpu", rule="cpu", pid=worker)
        record_timing("aiohttp", "cpu", onset, event)

    assert event["service"] == "aiohttp_app"
    function, share = hottest_function(Path(event["_path"]) / "cpu.pb.gz")
    assert function.endswith("hot_spin"), (function, share, event["captures"]["cpu"])


def test_aiohttp_task_pileup_writes_a_task_event(dumps: Path, tmp_path: Path) -> None:
    from holmespy import loops

    if not loops.tasks_supported():
        pytest.skip(
            f"holmespy cannot count asyncio tasks on Python {sys.version.split()[0]} yet"
            " (holmespy.loops.tasks_supported() is False): the task rule is off here"
        )
    env = server_env(dumps, HOLMES_TASK=TASK_PILEUP)

    with running("aiohttp-tasks", aiohttp_argv, env, tmp_path) as server, Load(server):
        onset = time.time()
        parked = server.get("/tasks?n=1000")
        event = wait_for_event(dumps, "task", rule="task", pid=parked["pid"])
        record_timing("aiohttp", "task", onset, event)

    assert event["service"] == "aiohttp_app"
    assert event["value"] > 500
    tasks = (Path(event["_path"]) / "tasks.txt").read_text(encoding="utf-8")
    assert "parked_task" in tasks


def test_gunicorn_worker_timeout_publishes_a_partial_cpu_event_without_a_sigkill(
    dumps: Path, tmp_path: Path
) -> None:
    # gunicorn --timeout 4: the master SIGABRTs the stuck worker, which exits
    # through sys.exit(1); one second later it would SIGKILL it. The 10 s CPU
    # profile is still running then: the event must be published, cut short.
    env = server_env(dumps, HOLMES_CPU=CPU_SPIKE, HOLMES_CPU_PROFILE_SECONDS="10")

    def argv(port: int) -> list[str]:
        gunicorn = [*GUNICORN, "-w", "1", "--timeout", "4", "-b", f"127.0.0.1:{port}"]
        return [HOLMESPY, "run", "--", *gunicorn, "wsgi_app:app"]

    with running("gunicorn-timeout", argv, env, tmp_path) as server:
        (worker,) = server.wait_warm(workers=1)
        onset = time.time()
        stuck = threading.Thread(target=_request_that_dies, args=(server, "/spin?n=30"))
        stuck.start()
        event = wait_for_event(dumps, "cpu", rule="cpu", pid=worker, writer_gone=worker)
        record_timing("gunicorn --timeout 4", "cpu (partial)", onset, event)
        stuck.join(60)
        replacement = server.get("/holmespy")["pid"]  # the master replaced the worker
        log = server.output()

    assert replacement != worker
    assert f"WORKER TIMEOUT (pid:{worker})" in log
    assert "SIGKILL" not in log, log
    assert "Perhaps out of memory" not in log, log
    assert event.get("partial") is True, event
    record_cut("gunicorn --timeout 4", event)
    profile = Path(event["_path"]) / "cpu.pb.gz"
    function, share = hottest_function(profile)
    assert function.endswith("hot_spin"), (function, share, event["captures"]["cpu"])


def _request_that_dies(server: Server, path: str) -> None:
    with contextlib.suppress(OSError):  # the worker is aborted mid-request: the connection drops
        server.get(path, timeout=60)


def test_gunicorn_recycled_worker_is_replaced_without_waiting_for_its_capture(
    dumps: Path, tmp_path: Path
) -> None:
    # --max-requests with one worker: the worker exits after its 10th request
    # while a 30 s CPU profile is in progress. Until the replacement has
    # booted nothing is served, so the request that waits for it measures
    # the delay (recorded for docs/servers.md). The exit must cut the window
    # and publish what it has rather than wait for it: the event says so,
    # and the delay is far below the window (the one wall-clock check here,
    # half the broken value, so a slow machine cannot make it fail).
    window = 30.0
    env = server_env(dumps, HOLMES_CPU="min=0,diff=0,abs=0,cooldown=1h")
    env["HOLMES_CPU_PROFILE_SECONDS"] = str(window)

    def argv(port: int) -> list[str]:
        recycle = ["--max-requests", "10", "--max-requests-jitter", "0"]
        return [*GUNICORN, "-w", "1", *recycle, "-b", f"127.0.0.1:{port}", "wsgi_app:app"]

    with running("gunicorn-recycle", argv, env, tmp_path) as server:
        worker = server.get("/holmespy")["pid"]
        deadline = time.monotonic() + 60
        while not temps_of(dumps, worker):  # its CPU capture is in progress
            assert time.monotonic() < deadline, f"no capture started:\n{server.output()}"
            time.sleep(0.05)
        latencies = []
        for _ in range(30):
            started = time.monotonic()
            pid = server.get("/")["pid"]
            latencies.append((pid, time.monotonic() - started))
            if pid != worker:
                break
        event = wait_for_event(dumps, "cpu", rule="cpu", pid=worker, writer_gone=worker)
        log = server.output()

    assert latencies[-1][0] != worker, f"the worker was never recycled:\n{log}"
    delay = max(seconds for _, seconds in latencies)
    record("gunicorn --max-requests -w 1", "replacement delay", delay_s=delay)
    assert event.get("partial") is True, event
    assert delay < window / 2, f"the replacement waited {delay:.1f} s for the capture:\n{log}"
