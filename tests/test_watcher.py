"""The watcher in-process: lifecycle, failures absorbed, never felt by the host."""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import holmespy
from holmespy import Config, Rule, loops
from holmespy.capturer import EventJob
from holmespy.watcher import Watcher

pytestmark = [pytest.mark.timeout(30), pytest.mark.usefixtures("holmes_stopped")]

QUICK = Rule(min=0, diff=0, abs=0, cooldown=0)  # fires on every sample, the first one too


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def quiet_config(tmp_path: Path, **changes: object) -> Config:
    quiet = {
        "interval": 0.01,
        "cpu": None,
        "mem": None,
        "thread": None,
        "task": None,
        "gcheap": None,
    }
    return Config(dump_path=tmp_path, service="unit", **{**quiet, **changes})


def test_start_is_idempotent_and_stop_then_start_works(tmp_path: Path) -> None:
    first = holmespy.start(quiet_config(tmp_path))
    assert first is not None
    assert holmespy.start() is first
    assert holmespy.status().running
    holmespy.stop()
    assert not holmespy.status().running
    assert not any(t.name.startswith("holmespy-") for t in threading.enumerate())
    second = holmespy.start(quiet_config(tmp_path))
    assert second is not None
    assert second is not first
    wait_for(lambda: holmespy.status().ticks >= 3)


def test_start_returns_before_its_thread_does_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The dump-root check, the salvage of earlier runs and every tick run on
    # the watcher's thread, never on the host's: hold that thread at its door
    # and start() still returns, with nothing done yet.
    release = threading.Event()
    real_run = Watcher._run

    def held_run(self: Watcher) -> None:
        release.wait(60)
        real_run(self)

    monkeypatch.setattr(Watcher, "_run", held_run)
    try:
        watcher = holmespy.start(quiet_config(tmp_path, thread=QUICK))
        assert watcher is not None
        assert holmespy.status().ticks == 0
    finally:
        release.set()
    wait_for(lambda: holmespy.status().ticks >= 1)


def test_disabled_config_starts_nothing(tmp_path: Path) -> None:
    assert holmespy.start(quiet_config(tmp_path, enable=False)) is None
    assert holmespy.status() == holmespy.Status(
        enabled=False, running=False, pid=holmespy.status().pid
    )
    assert not any(t.name.startswith("holmespy-") for t in threading.enumerate())


def test_a_raising_sampler_is_logged_and_counted_and_the_host_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    watcher = holmespy.start(quiet_config(tmp_path, thread=QUICK))
    assert watcher is not None

    def broken() -> None:
        raise OSError("/proc vanished")

    watcher.sampler.sample = broken  # type: ignore[method-assign, assignment]
    host_work = sum(range(1000))  # the host keeps running its own code meanwhile
    wait_for(lambda: holmespy.status().errors >= 5)
    status = holmespy.status()
    assert status.running
    assert status.last_error == "tick: OSError: /proc vanished"
    assert host_work == 499500
    # Logged once, not once per tick: the log stays readable during an outage.
    assert len([r for r in caplog.records if "tick failed" in r.getMessage()]) == 1


def test_a_raising_capture_is_counted_and_the_event_still_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from holmespy import profilers

    def broken(ctx: profilers.CaptureContext) -> dict[str, object]:
        raise RuntimeError("capture bug")

    monkeypatch.setitem(profilers.CAPTURES, "thread", (("broken", broken),))
    holmespy.start(quiet_config(tmp_path, thread=QUICK))
    # QUICK fires every tick: while the window lane is busy with one event,
    # the next ones are published without their window (and counted dropped),
    # so wait for the error rather than for the first event.
    wait_for(lambda: holmespy.status().errors >= 1 and holmespy.status().events >= 1)
    status = holmespy.status()
    assert "capture bug" in (status.last_error or "")
    holmespy.stop()
    events = [p.read_text() for p in tmp_path.glob("unit/*/[!.]*/event.json")]
    assert any('"error": "RuntimeError: capture bug"' in event for event in events)


def test_the_watcher_never_waits_for_a_capture(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from holmespy import profilers

    release = threading.Event()

    def slow(ctx: profilers.CaptureContext) -> dict[str, object]:
        release.wait(10)
        return {}

    monkeypatch.setitem(profilers.CAPTURES, "thread", (("slow", slow),))
    holmespy.start(quiet_config(tmp_path, thread=QUICK))
    wait_for(lambda: holmespy.status().ticks >= 40)  # ticks go on while a capture hangs
    status = holmespy.status()
    assert status.dropped > 0, "a full queue drops instead of blocking"
    release.set()


def test_a_full_disk_loses_the_event_cleanly_and_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import errno

    from holmespy import bundle

    def full(path: Path, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    def full_at(dir_fd: int, name: str, data: bytes, mode: int = 0o600) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(bundle, "write_private", full)
    monkeypatch.setattr("holmespy.profilers.write_private", full)
    monkeypatch.setattr("holmespy.safefs.write_file", full_at)  # event.json and its checkpoint
    holmespy.start(quiet_config(tmp_path, thread=QUICK))
    wait_for(lambda: holmespy.status().capture_failures >= 1)
    assert "free disk space or point HOLMES_DUMP_PATH elsewhere" in (
        holmespy.status().last_error or ""
    )
    holmespy.stop()  # a capture still in progress ends (and cleans up) first
    assert list(tmp_path.rglob(".tmp-*")) == [], "no half-written bundle stays behind"
    assert list(tmp_path.rglob("event.json")) == []


def test_unwritable_dump_path_is_reported_not_raised(tmp_path: Path) -> None:
    blocker = tmp_path / "file-not-folder"
    blocker.write_text("")
    holmespy.start(quiet_config(blocker / "dumps", thread=QUICK))
    wait_for(lambda: holmespy.status().capture_failures >= 1)
    assert "HOLMES_DUMP_PATH" in (holmespy.status().last_error or "")
    assert holmespy.status().running


def test_reconfigure_applies_live(tmp_path: Path) -> None:
    holmespy.start(quiet_config(tmp_path, interval=5.0))
    wait_for(lambda: holmespy.status().ticks >= 1)
    assert holmespy.status().ticks == 1  # the next tick is 5 s away
    holmespy.reconfigure(interval=0.01, thread=QUICK)
    wait_for(lambda: holmespy.status().events >= 1)
    assert holmespy.current() is not None
    assert holmespy.current().config.interval == 0.01  # type: ignore[union-attr]


def test_cooldown_and_limit_skips_are_counted_in_status(tmp_path: Path) -> None:
    rule = Rule(min=0, diff=0, abs=0, cooldown=3600)
    holmespy.start(quiet_config(tmp_path, thread=rule))
    wait_for(lambda: holmespy.status().skipped.get("thread", {}).get("cooldown", 0) >= 3)
    wait_for(lambda: holmespy.status().events >= 1)  # its capture lane publishes it meanwhile
    assert holmespy.status().events == 1


def test_tick_reports_every_rule_decision(tmp_path: Path) -> None:
    watcher = Watcher(quiet_config(tmp_path, thread=Rule(min=1, diff=25, abs=1000)))
    try:
        decisions = [watcher.tick() for _ in range(11)]
    finally:
        watcher.stop()
    assert [d.verdict.value for _, d in decisions[0]] == ["warmup"]
    assert decisions[-1][0][0] == "thread"
    assert decisions[-1][0][1].verdict.value == "no-spike"


def test_debug_logging_gives_every_decision_its_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A healthy sample is decided without a word at INFO; at DEBUG its reason
    # is built and logged, below min as much as any other.
    watcher = Watcher(quiet_config(tmp_path, thread=Rule(min=10_000, diff=25, abs=20_000)))
    try:
        with caplog.at_level(logging.INFO, logger="holmespy"):
            watcher.tick()
        assert caplog.messages == []
        with caplog.at_level(logging.DEBUG, logger="holmespy"):
            ((name, decision),) = watcher.tick()
    finally:
        watcher.stop()
    assert (name, decision.verdict.value) == ("thread", "below-min")
    assert caplog.messages == [f"holmespy thread rule: {decision.reason}"]
    assert decision.reason.endswith("< min 10000")


def test_a_process_that_starts_over_abs_fires_on_its_first_tick(tmp_path: Path) -> None:
    # A fresh worker that leaked threads before anyone watched: no blind warm-up.
    never = threading.Event()
    leaked = [threading.Thread(target=never.wait, daemon=True) for _ in range(12)]
    for thread in leaked:
        thread.start()
    abs_below_now = threading.active_count() - 5
    watcher = Watcher(quiet_config(tmp_path, thread=Rule(min=1, diff=25, abs=abs_below_now)))
    try:
        ((name, decision),) = watcher.tick()
    finally:
        watcher.stop()
        never.set()
    assert name == "thread"
    assert decision.fire, decision.reason
    assert decision.reason.endswith(f"> abs {abs_below_now}")


def test_holmespy_threads_are_daemons_and_named(tmp_path: Path) -> None:
    holmespy.start(quiet_config(tmp_path))
    ours = [t for t in threading.enumerate() if t.name.startswith("holmespy-")]
    # The capture lanes start with the first event: a quiet process has the watcher
    # and the recorder's sampling thread (the flight recorder and the loop watchdog).
    assert {t.name for t in ours} == {"holmespy-watcher", "holmespy-recorder"}
    assert all(t.daemon for t in ours)


def test_with_the_recorder_and_the_loop_rule_off_no_sampling_thread_runs(tmp_path: Path) -> None:
    holmespy.start(quiet_config(tmp_path, recorder=None, loop=None))
    names = {t.name for t in threading.enumerate() if t.name.startswith("holmespy-")}
    assert names == {"holmespy-watcher"}
    assert holmespy.status().stacks["recorder"] == "off"
    holmespy.reconfigure(recorder=5.0)  # switched on live: the thread starts
    wait_for(lambda: holmespy.status().stacks["thread"] == "running")


def test_tasks_are_counted_over_loops_in_any_thread_started_before_or_after(tmp_path: Path) -> None:
    import asyncio

    def run_loop(n_tasks: int, ready: threading.Event, done: threading.Event) -> None:
        async def main() -> None:
            tasks = [asyncio.create_task(asyncio.sleep(60)) for _ in range(n_tasks)]
            ready.set()
            while not done.is_set():
                await asyncio.sleep(0.01)
            for task in tasks:
                task.cancel()

        asyncio.run(main())

    gc.collect()  # finished tasks of earlier tests, kept alive only by cycles
    baseline = loops.count_tasks()
    done = threading.Event()
    before, after = threading.Event(), threading.Event()
    threads = [threading.Thread(target=run_loop, args=(30, before, done), name="loop-before")]
    threads[0].start()
    before.wait(5)
    holmespy.start(quiet_config(tmp_path))
    threads.append(threading.Thread(target=run_loop, args=(50, after, done), name="loop-after"))
    threads[1].start()
    after.wait(5)
    try:
        # 30 + 50 sleeping tasks, plus each loop's main task.
        wait_for(lambda: (holmespy.status().last_sample or {}).get("tasks") == baseline + 82)
    finally:
        done.set()
        for thread in threads:
            thread.join(5)


def test_a_queued_capture_is_skipped_if_cpu_rose_above_cpu_max_meanwhile(tmp_path: Path) -> None:
    # A rule that only a diff could fire: its one tick (warm-up) queues nothing itself.
    only_diff = Rule(min=0, diff=0, abs=1e9, cooldown=0)
    watcher = Watcher(quiet_config(tmp_path, thread=only_diff, cpu_max=50.0))
    try:
        watcher.tick()
        assert watcher.last_sample is not None
        watcher.last_sample.cpu = 95.0  # CPU rose while the job waited in the queue
        event_id = "20261124T000000.000Z-thread-0000000000"
        job = EventJob(event_id, "thread", {"id": event_id, "service": "unit"}, time.monotonic())
        assert watcher.capturer.submit(job)
        assert watcher.capturer.stop(30)  # the lanes have run what they were given
    finally:
        watcher.stop()
    assert list(tmp_path.rglob("event.json")) == []
    assert watcher.status().skipped == {"thread": {"cpu-max": 1}}


@pytest.mark.parametrize(
    ("setup", "level", "shown"),
    [
        ("", "INFO", "stderr"),  # no logging configured: straight to stderr
        (
            "import logging; logging.basicConfig(format='LOG %(message)s', level='INFO')",
            "INFO",
            "log",
        ),
        ("", "WARNING", "nowhere"),  # HOLMES_LOG_LEVEL=WARNING silences it
    ],
)
def test_one_line_at_start_says_holmespy_is_watching(
    tmp_path: Path, setup: str, level: str, shown: str
) -> None:
    import os
    import subprocess
    import sys

    code = f"{setup}\nimport holmespy, os\nholmespy.start()\nprint('pid', os.getpid())\n"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOLMES_")}
    root = Path(__file__).resolve().parent.parent
    env.update(
        PYTHONPATH=str(root / "src"),
        HOLMES_SERVICE="shop",
        HOLMES_DUMP_PATH=str(tmp_path),
        HOLMES_LOG_LEVEL=level,
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30
    )
    pid = proc.stdout.split()[-1]
    line = f"holmespy watching pid {pid} as service 'shop' every 5s; dumps in {tmp_path}"
    lines = proc.stderr.splitlines()
    if shown == "stderr":
        assert lines == [line], proc.stderr
    elif shown == "log":
        assert lines == [f"LOG {line}"], proc.stderr
    else:
        assert lines == [], proc.stderr
