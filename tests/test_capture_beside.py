"""The task dump beside the CPU window: a blocked loop's probe wait adds nothing to an event.

The task dump may wait up to its probe timeout for an event loop that does
not answer. When the event has a window (a CPU profile), the window lane
takes the event before the dump, which then runs on the instant lane while
the window is open; the window lane publishes once both are done. The
captures here are stand-ins that record where they ran and what they were
given.
"""

from __future__ import annotations

import errno
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from holmespy import capturer, profilers
from holmespy.capturer import EventJob
from holmespy.watcher import Watcher
from tests.conftest import rules_off_config, wait_for

pytestmark = pytest.mark.timeout(60)


def job(rule: str) -> EventJob:
    event_id = f"20261124T000001.000Z-{rule}-0000000001"
    return EventJob(event_id, rule, {"id": event_id, "service": "unit", "rule": rule}, 0.0)


def published(tmp_path: Path) -> list[dict[str, Any]]:
    return [
        json.loads(p.read_text())
        for p in tmp_path.rglob("event.json")
        if not p.parent.name.startswith(".")
    ]


class StandIns:
    """Captures that record the thread they ran on and the threads they were told to leave out."""

    def __init__(self) -> None:
        self.ran_on: dict[str, int] = {}
        self.excluded: dict[str, frozenset[int]] = {}

    def capture(self, name: str, body: Callable[[], None] | None = None) -> tuple[str, Any]:
        def run(ctx: profilers.CaptureContext) -> dict[str, Any]:
            self.ran_on[name] = threading.get_ident()
            self.excluded[name] = ctx.exclude_threads
            if body is not None:
                body()
            return {"file": None, "stand_in": name}

        return name, run


def run_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rule: str, plan: tuple[Any, ...]
) -> Watcher:
    monkeypatch.setitem(profilers.CAPTURES, rule, plan)
    watcher = Watcher(rules_off_config(tmp_path))
    assert watcher.capturer.submit(job(rule))
    return watcher


def test_the_task_dump_runs_while_the_cpu_window_is_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    both = threading.Barrier(2, timeout=20)  # passes only if the two run at the same time
    stand = StandIns()
    plan = (
        stand.capture("threads"),
        stand.capture("tasks", both.wait),
        stand.capture("cpu", both.wait),
    )
    watcher = run_event(tmp_path, monkeypatch, "cpu", plan)
    try:
        wait_for(lambda: len(published(tmp_path)) == 1)
    finally:
        watcher.stop()

    (event,) = published(tmp_path)
    assert {name: c.get("stand_in") for name, c in event["captures"].items()} == {
        "threads": "threads",
        "tasks": "tasks",
        "cpu": "cpu",
    }
    assert "partial" not in event
    instant, window = watcher.capturer.idents
    assert stand.ran_on == {"threads": instant, "tasks": instant, "cpu": window}
    assert instant in stand.excluded["cpu"]  # the profile leaves the task dump's lane out
    # The thread dump still shows the moment of the trigger: taken before the window.
    assert event["captures"]["threads"]["ended_after"] <= event["captures"]["cpu"]["started_after"]


def test_the_event_waits_for_a_task_dump_that_ends_after_its_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    window_done = threading.Event()
    stand = StandIns()
    plan = (
        stand.capture("tasks", lambda: window_done.wait(20)),
        stand.capture("cpu", window_done.set),
    )
    watcher = run_event(tmp_path, monkeypatch, "cpu", plan)
    try:
        wait_for(lambda: len(published(tmp_path)) == 1)
    finally:
        watcher.stop()

    (event,) = published(tmp_path)
    assert event["captures"]["tasks"]["stand_in"] == "tasks"
    assert event["captures"]["cpu"]["ended_after"] <= event["captures"]["tasks"]["ended_after"]


def test_a_full_disk_in_the_task_dump_beside_the_window_loses_the_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full() -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    stand = StandIns()
    watcher = run_event(
        tmp_path, monkeypatch, "cpu", (stand.capture("tasks", full), stand.capture("cpu"))
    )
    try:
        wait_for(lambda: watcher.status().capture_failures == 1)
    finally:
        watcher.stop()
    assert published(tmp_path) == []
    assert "no space left for dumps" in (watcher.status().last_error or "")


def test_a_task_dump_still_running_long_after_the_window_is_left_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(capturer, "BESIDE_GRACE", 0.05)
    release = threading.Event()
    stand = StandIns()
    plan = (stand.capture("tasks", lambda: release.wait(20)), stand.capture("cpu"))
    watcher = run_event(tmp_path, monkeypatch, "cpu", plan)
    try:
        wait_for(lambda: len(published(tmp_path)) == 1)
        (event,) = published(tmp_path)
    finally:
        release.set()
        watcher.stop()
    assert event["captures"]["tasks"] == {
        "error": "not in this event: still running 0.05 s after the window ended"
    }
    assert event["captures"]["cpu"]["stand_in"] == "cpu"
    assert "capture beside the window" in (watcher.status().last_error or "")


def test_without_a_window_the_task_dump_runs_in_turn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stand = StandIns()
    watcher = run_event(
        tmp_path, monkeypatch, "task", (stand.capture("tasks"), stand.capture("threads"))
    )
    try:
        wait_for(lambda: len(published(tmp_path)) == 1)
    finally:
        watcher.stop()
    (event,) = published(tmp_path)
    assert list(event["captures"]) == ["tasks", "threads"]
    assert set(stand.ran_on.values()) == {watcher.capturer.idents[0]}
