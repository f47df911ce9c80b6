"""A capture in progress when the process goes: cut at once, published as partial, in time.

Each test runs a real program that fires the cpu rule, waits until the CPU
window (30 s long, far longer than any test) is running, then goes the way
servers make their workers go: `sys.exit` (what gunicorn's worker timeout
does after SIGABRT, and `--max-requests`), SIGTERM with no handler, SIGTERM
re-raised after the server's own handler is put back (uvicorn). The event
must be there, marked partial, with the CPU samples taken so far, and the
process must be gone long before the window would have ended.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from holmespy.formats.pprof import read_pprof

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent
WINDOW = 30.0
"""The CPU window asked for: a test that waited for it would take this long."""

PROGRAM = """
import os, signal, sys, threading, time
import holmespy

def burn():
    while True:
        sum(i * i for i in range(2000))

HOST_HANDLER = os.environ.get("HOST_HANDLER", "")
if HOST_HANDLER == "gunicorn":
    # gunicorn's worker: its own SIGABRT handler ends the worker with sys.exit(1).
    def handle_abort(signum, frame):
        sys.exit(1)
    signal.signal(signal.SIGABRT, handle_abort)

holmespy.start()

if HOST_HANDLER == "uvicorn":
    # uvicorn: its handler while it serves, then the previous one back and SIGTERM again.
    caught = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: caught.append(signum))

threading.Thread(target=burn, name="hot", daemon=True).start()
watcher = holmespy.current()
while not watcher.capturer.window.busy:
    time.sleep(0.01)
if os.environ.get("HOLMES_CPU_ENGINE", "auto") == "auto":
    # py-spy prints its banner once it samples (a loaded machine may take a while).
    import pathlib
    dumps = pathlib.Path(os.environ["HOLMES_DUMP_PATH"])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not any(
        p.stat().st_size for p in dumps.rglob(".pyspy/stdout.txt")
    ):
        time.sleep(0.02)
time.sleep(1.0)  # let the CPU window take samples
print("window running", time.monotonic(), flush=True)

if HOST_HANDLER == "uvicorn":
    while not caught:
        time.sleep(0.01)
    signal.signal(signal.SIGTERM, previous)
    print("re-raising", time.monotonic(), flush=True)
    signal.raise_signal(signal.SIGTERM)
elif os.environ.get("EXIT") == "1":
    print("exiting", time.monotonic(), flush=True)
    sys.exit(0)
while True:
    time.sleep(0.1)
"""


class Program:
    def __init__(self, tmp_path: Path, **env: str) -> None:
        self.dump_path = tmp_path / "dumps"
        script = tmp_path / "program.py"
        script.write_text(PROGRAM)
        clean = {k: v for k, v in os.environ.items() if not k.startswith("HOLMES_")}
        self.proc = subprocess.Popen(
            [sys.executable, str(script)],
            env={
                **clean,
                "PYTHONPATH": str(ROOT / "src"),
                "HOLMES_DUMP_PATH": str(self.dump_path),
                "HOLMES_INTERVAL": "100ms",
                "HOLMES_CPU": "min=1,diff=1,abs=5,cooldown=1h",
                "HOLMES_CPU_PROFILE_SECONDS": str(WINDOW),
                "HOLMES_MEM": "off",
                "HOLMES_THREAD": "off",
                "HOLMES_TASK": "off",
                "HOLMES_GCHEAP": "off",
                **env,
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
        )
        self.lines: list[str] = []

    def wait_for(self, word: str) -> float:
        """The monotonic time the program printed with `word`."""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            if line.startswith(word):
                return float(line.split()[-1])
        raise AssertionError(f"program ended before {word!r}: {self.finish()}")

    def finish(self) -> tuple[int, float, str]:
        """(exit status, monotonic time it was seen, stderr)."""
        _, err = self.proc.communicate(timeout=60)
        return self.proc.returncode, time.monotonic(), err

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(path.read_text()) for path in sorted(self.dump_path.rglob("event.json"))]

    def folder(self, event: dict[str, Any]) -> Path:
        return next(p.parent for p in self.dump_path.rglob("event.json") if event["id"] in str(p))


def cpu_total_ns(path: Path) -> int:
    profile = read_pprof(path)
    col = [t.type for t in profile.sample_types].index("cpu")
    return sum(s.values[col] for s in profile.samples)


def assert_partial_cpu_event(program: Program, reason: str) -> dict[str, Any]:
    (event,) = program.events()
    assert event["rule"] == "cpu"
    assert event["partial"] is True
    assert event["partial_reason"].startswith(reason), event["partial_reason"]
    assert "cut short: cpu" in event["partial_reason"]
    cpu = event["captures"]["cpu"]
    assert cpu["cut_short"] is True
    assert cpu["started_after"] < cpu["ended_after"] < WINDOW
    # The thread dump describes the moment of the trigger, taken before the window.
    assert event["captures"]["threads"]["ended_after"] <= cpu["started_after"]
    folder = program.folder(event)
    assert cpu_total_ns(folder / "cpu.pb.gz") > 0, cpu
    assert "threads.txt" in {f["name"] for f in event["files"]}
    assert not list(program.dump_path.rglob(".tmp-*")), "a temp folder was left behind"
    return event


@pytest.mark.parametrize("engine", ["auto", "sampler"])
def test_exit_during_a_cpu_window_publishes_the_samples_taken(tmp_path: Path, engine: str) -> None:
    program = Program(tmp_path, EXIT="1", HOLMES_CPU_ENGINE=engine)
    exiting = program.wait_for("exiting")
    code, gone, err = program.finish()

    assert code == 0, err
    event = assert_partial_cpu_event(program, "the process was exiting")
    assert event["captures"]["cpu"]["engine"] == ("pyspy" if engine == "auto" else "sampler")
    # Cut at once: gone long before the 30 s window would have ended.
    assert gone - exiting < WINDOW / 3


def test_sigterm_without_a_handler_publishes_then_dies_of_sigterm(tmp_path: Path) -> None:
    program = Program(tmp_path)
    program.wait_for("window running")
    program.proc.send_signal(signal.SIGTERM)
    code, _, err = program.finish()

    assert code == -signal.SIGTERM, err  # died of SIGTERM, as without holmespy
    assert_partial_cpu_event(program, "SIGTERM received")


def test_sigterm_re_raised_after_the_servers_own_handler_still_publishes(tmp_path: Path) -> None:
    # uvicorn: its handler while serving, then the previous one back and SIGTERM again.
    program = Program(tmp_path, HOST_HANDLER="uvicorn")
    program.wait_for("window running")
    program.proc.send_signal(signal.SIGTERM)
    program.wait_for("re-raising")
    code, _, err = program.finish()

    assert code == -signal.SIGTERM, err
    assert_partial_cpu_event(program, "SIGTERM received")


def test_a_worker_timeout_abort_publishes_the_partial_event(tmp_path: Path) -> None:
    # gunicorn's worker timeout: SIGABRT, whose handler calls sys.exit(1); SIGKILL 1 s later.
    program = Program(tmp_path, HOST_HANDLER="gunicorn")
    program.wait_for("window running")
    aborted = time.monotonic()
    program.proc.send_signal(signal.SIGABRT)
    code, gone, err = program.finish()

    assert code == 1, err
    assert_partial_cpu_event(program, "the process was exiting")
    assert gone - aborted < WINDOW / 3


def test_exit_seconds_zero_leaves_sigterm_and_exit_alone(tmp_path: Path) -> None:
    program = Program(tmp_path, HOLMES_EXIT_SECONDS="0")
    program.wait_for("window running")
    program.proc.send_signal(signal.SIGTERM)
    code, _, err = program.finish()

    assert code == -signal.SIGTERM, err
    assert program.events() == []  # nothing published at exit: the temp folder is for salvage
    assert list(program.dump_path.rglob(".tmp-*/event.partial.json"))


def test_our_sigterm_handler_only_where_there_was_none() -> None:
    code = """
import signal, holmespy
def mine(signum, frame):
    pass
signal.signal(signal.SIGTERM, mine)
holmespy.start()
assert signal.getsignal(signal.SIGTERM) is mine, signal.getsignal(signal.SIGTERM)
holmespy.stop()
signal.signal(signal.SIGTERM, signal.SIG_DFL)
holmespy.start()
assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
holmespy.stop()
assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
signal.signal(signal.SIGTERM, signal.SIG_IGN)
holmespy.start()
assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
print("ok")
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOLMES_")}
    env.update(PYTHONPATH=str(ROOT / "src"), HOLMES_LOG_LEVEL="WARNING")
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.stdout.strip() == "ok", proc.stderr


def test_exit_with_a_window_in_flight_and_a_silent_store_is_bounded(tmp_path: Path) -> None:
    # A store that accepts connections and never answers: exit once took 14.5 s.
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    port = silent.getsockname()[1]
    try:
        program = Program(
            tmp_path,
            EXIT="1",
            HOLMES_STORAGE="s3://silent-bucket/prod",
            AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}",
            AWS_ACCESS_KEY_ID="test",
            AWS_SECRET_ACCESS_KEY="test",
            AWS_DEFAULT_REGION="us-east-1",
        )
        exiting = program.wait_for("exiting")
        code, gone, err = program.finish()
    finally:
        silent.close()

    assert code == 0, err
    assert_partial_cpu_event(program, "the process was exiting")  # kept in the spool
    assert gone - exiting < WINDOW / 3
