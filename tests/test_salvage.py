"""At start, what dead processes left in the dump folder becomes events (or goes away)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import holmespy
from holmespy import Config
from holmespy.bundle import EVENT_FILE, PARTIAL_FILE, host_facts
from holmespy.formats.pprof import read_pprof
from holmespy.salvage import STALE_SECONDS, remove_dead_pyspy_folders, salvage

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("holmes_stopped")]

ROOT = Path(__file__).resolve().parent.parent
DAY = "2026-11-24"
EVENT_ID = "20261124T035412.123Z-cpu-8f3a1c9b2e"


@pytest.fixture(scope="module")
def dead_pid() -> int:
    """The pid of a process that has ended (reaped, so it cannot be alive)."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], stdout=-1)
    return int(proc.stdout)


def leftover(dump: Path, pid: int, event_id: str = EVENT_ID, service: str = "svc") -> Path:
    folder = dump / service / DAY / f".tmp-{pid}-{event_id}"
    folder.mkdir(parents=True)
    return folder


def checkpoint(folder: Path, **extra: object) -> None:
    event = {
        "id": EVENT_ID,
        "service": "svc",
        **host_facts(),
        "rule": "cpu",
        "reason": "cpu 95 > abs 70",
        "captures": {"threads": {"file": "threads.txt"}},
        **extra,
    }
    (folder / PARTIAL_FILE).write_text(json.dumps(event))


PYSPY_RAW = (
    "thread (4242): MainThread;<module> (/srv/app.py:3);serve (/srv/app.py:10);"
    "burn (/srv/app.py:20) 90\n"
    "thread (4242): MainThread;<module> (/srv/app.py:3);serve (/srv/app.py:11) 10\n"
)


def test_a_dead_processes_capture_becomes_a_partial_event(tmp_path: Path, dead_pid: int) -> None:
    folder = leftover(tmp_path, dead_pid)
    checkpoint(folder, pid=dead_pid)
    (folder / "threads.txt").write_text('Thread "MainThread" ...\n')
    (folder / ".pyspy").mkdir()
    (folder / ".pyspy" / "raw.txt").write_text(PYSPY_RAW)

    found = salvage(tmp_path)

    final = tmp_path / "svc" / DAY / EVENT_ID
    assert found.published == [final]
    assert not folder.exists()
    event = json.loads((final / EVENT_FILE).read_text())
    assert event["partial"] is True
    assert event["partial_reason"].startswith(f"salvaged at start by pid {os.getpid()}")
    assert f"process {dead_pid} ended" in event["partial_reason"]
    assert event["reason"] == "cpu 95 > abs 70"  # what the checkpoint knew is kept
    assert {f["name"] for f in event["files"]} == {"threads.txt", "cpu.pb.gz"}
    assert sorted(p.name for p in final.iterdir()) == ["cpu.pb.gz", "event.json", "threads.txt"]
    profile = read_pprof(final / "cpu.pb.gz")
    hottest = max(profile.samples, key=lambda s: s.values[0])
    assert hottest.stack[0].function == "app.burn"
    assert hottest.values[0] == 90


def test_data_without_a_checkpoint_is_published_with_what_the_name_says(
    tmp_path: Path, dead_pid: int
) -> None:
    folder = leftover(tmp_path, dead_pid)
    (folder / "threads.txt").write_text("x\n")
    old = time.time() - 120  # older than a capture that is only starting
    os.utime(folder / "threads.txt", (old, old))
    os.utime(folder, (old, old))

    (published,) = salvage(tmp_path).published

    event = json.loads((published / EVENT_FILE).read_text())
    assert (event["id"], event["rule"], event["service"], event["pid"]) == (
        EVENT_ID,
        "cpu",
        "svc",
        dead_pid,
    )
    assert event["time"] == "2026-11-24T03:54:12.123Z"
    assert event["partial"] is True


def test_nothing_worth_keeping_is_removed(tmp_path: Path, dead_pid: int) -> None:
    empty = leftover(tmp_path, dead_pid)
    deleting = leftover(tmp_path, dead_pid, "20261124T035412.124Z-mem-0000000001")
    (deleting / EVENT_FILE).write_text("{}")  # a published event the spool was deleting
    old = time.time() - 120  # past the age of a capture that is only starting
    for path in (empty, deleting, deleting / EVENT_FILE):
        os.utime(path, (old, old))

    found = salvage(tmp_path)

    assert found.published == []
    assert sorted(found.removed) == sorted([empty, deleting])
    assert list((tmp_path / "svc" / DAY).iterdir()) == []


def test_a_live_processes_capture_is_left_alone(tmp_path: Path) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        folder = leftover(tmp_path, sleeper.pid)
        checkpoint(folder)
        (folder / "threads.txt").write_text("x\n")
        found = salvage(tmp_path)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert (found.published, found.removed) == ([], [])
    assert folder.exists()


def test_another_hosts_capture_waits_until_it_is_surely_dead(tmp_path: Path, dead_pid: int) -> None:
    # A dump folder shared between containers: their pids say nothing about ours.
    folder = leftover(tmp_path, dead_pid)
    checkpoint(folder, host="another-container")

    assert salvage(tmp_path).published == []
    assert salvage(tmp_path, now=time.time() + STALE_SECONDS + 1).published != []


def test_folders_that_are_not_ours_are_not_touched(tmp_path: Path, dead_pid: int) -> None:
    day = tmp_path / "svc" / DAY
    day.mkdir(parents=True)
    odd = [day / f".tmp-{dead_pid}-not-an-event-id", day / f".tmp-{dead_pid}-{EVENT_ID}.part"]
    for path in odd:
        path.mkdir()
    link = day / f".tmp-{dead_pid}-20261124T035412.125Z-cpu-0000000002"
    link.symlink_to(tmp_path)

    found = salvage(tmp_path)

    assert (found.published, found.removed) == ([], [])
    assert all(path.exists() for path in odd)
    assert link.is_symlink()


def test_start_salvages_and_counts_it_in_status(tmp_path: Path, dead_pid: int) -> None:
    folder = leftover(tmp_path, dead_pid)
    checkpoint(folder)
    (folder / "threads.txt").write_text("x\n")
    empty = leftover(tmp_path, dead_pid, "20261124T035412.124Z-thread-0000000001")
    old = time.time() - 120
    os.utime(empty, (old, old))

    holmespy.start(Config(dump_path=tmp_path, interval=0.05, service="svc"))
    deadline = time.monotonic() + 30
    while holmespy.status().salvaged == 0 and time.monotonic() < deadline:
        time.sleep(0.02)

    status = holmespy.status()
    assert (status.salvaged, status.stale_removed) == (1, 1)
    assert (tmp_path / "svc" / DAY / EVENT_ID / EVENT_FILE).is_file()


def test_a_folder_whose_py_spy_is_still_writing_waits(tmp_path: Path, dead_pid: int) -> None:
    folder = leftover(tmp_path, dead_pid)
    checkpoint(folder)
    (folder / ".pyspy").mkdir()
    writer = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], cwd=folder / ".pyspy"
    )
    try:
        found = salvage(tmp_path)
        assert found.deferred == [folder]
        assert found.published == []
        assert folder.exists()
    finally:
        writer.kill()
        writer.wait()
    assert salvage(tmp_path).published == [tmp_path / "svc" / DAY / EVENT_ID]


def test_py_spy_folders_of_dead_processes_are_removed(tmp_path: Path, dead_pid: int) -> None:
    dead = tmp_path / f"holmespy-pyspy-{dead_pid}-abc"
    live = tmp_path / f"holmespy-pyspy-{os.getpid()}-def"
    for folder in (dead, live):
        folder.mkdir()
        (folder / "raw.txt").write_text("x")

    assert remove_dead_pyspy_folders(tmp_path) == 1
    assert not dead.exists()
    assert live.exists()


KILLED_MID_CAPTURE = """
import threading, time
import holmespy

def burn():
    while True:
        sum(i * i for i in range(2000))

holmespy.start()
threading.Thread(target=burn, name="hot", daemon=True).start()
watcher = holmespy.current()
while not watcher.capturer.window.busy:
    time.sleep(0.01)
time.sleep(0.5)
print("window running", flush=True)
time.sleep(60)
"""


def test_a_worker_killed_outright_is_salvaged_by_the_next_start(tmp_path: Path) -> None:
    # SIGKILL (gunicorn's, 1 s after a worker timeout, or the OOM killer): no
    # exit path runs at all. py-spy outlives its target and writes its samples.
    dump = tmp_path / "dumps"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOLMES_")}
    env.update(
        PYTHONPATH=str(ROOT / "src"),
        HOLMES_DUMP_PATH=str(dump),
        HOLMES_SERVICE="svc",
        HOLMES_INTERVAL="100ms",
        HOLMES_CPU="min=1,diff=1,abs=5,cooldown=1h",
        HOLMES_CPU_PROFILE_SECONDS="30",
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_MID_CAPTURE], env=env, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith("window running")
    # py-spy prints its banner once it samples: only then does it have samples to save.
    deadline = time.monotonic() + 30
    while not any(p.stat().st_size for p in dump.rglob(".pyspy/stdout.txt")):
        assert time.monotonic() < deadline, "py-spy did not start sampling"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # py-spy notices its target is gone and writes what it sampled; until it
    # is done, a salvage leaves the folder for later instead of losing them.
    deadline = time.monotonic() + 30
    while (found := salvage(dump)).deferred:
        assert time.monotonic() < deadline, "py-spy did not finish"
        time.sleep(0.05)

    (published,) = found.published
    event = json.loads((published / EVENT_FILE).read_text())
    assert event["rule"] == "cpu"
    assert event["partial"] is True
    names = {f["name"] for f in event["files"]}
    assert {"threads.txt", "cpu.pb.gz"} <= names, event
    profile = read_pprof(published / "cpu.pb.gz")
    assert any(f.function.endswith("burn") for s in profile.samples for f in s.stack)
