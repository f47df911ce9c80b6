"""Two lanes: instant captures never wait behind another event's CPU or heap window."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from holmespy import profilers
from holmespy.capturer import EventJob
from holmespy.watcher import Watcher
from tests.conftest import rules_off_config, wait_for

pytestmark = pytest.mark.timeout(60)


def job(rule: str, n: int) -> EventJob:
    event_id = f"20261124T00000{n}.000Z-{rule}-000000000{n}"
    event = {"id": event_id, "service": "unit", "rule": rule}
    return EventJob(event_id, rule, event, time.monotonic())


def events(tmp_path: Path) -> dict[str, dict[str, Any]]:
    found = {}
    for path in tmp_path.rglob("event.json"):
        event = json.loads(path.read_text())
        found[event["rule"]] = event
    return found


def test_a_thread_event_is_published_while_a_cpu_window_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    window_open = threading.Event()
    release = threading.Event()

    def long_window(ctx: profilers.CaptureContext) -> dict[str, object]:
        window_open.set()
        release.wait(30)
        return {"file": None}

    monkeypatch.setitem(profilers.CAPTURES, "cpu", (profilers.THREADS, ("cpu", long_window)))
    watcher = Watcher(rules_off_config(tmp_path))
    try:
        assert watcher.capturer.submit(job("cpu", 1))
        window_open.wait(30)
        assert watcher.capturer.submit(job("thread", 2))

        # The thread event reaches disk while the CPU window is still open.
        wait_for(lambda: "thread" in events(tmp_path))
        assert "cpu" not in events(tmp_path)
        release.set()
        wait_for(lambda: "cpu" in events(tmp_path))
    finally:
        release.set()
        watcher.stop()
    cpu = events(tmp_path)["cpu"]
    # The cpu event's own thread dump was taken before its window opened.
    assert cpu["captures"]["threads"]["ended_after"] <= cpu["captures"]["cpu"]["started_after"]
    assert "partial" not in cpu


def test_a_full_window_lane_keeps_the_instant_captures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()

    def long_window(ctx: profilers.CaptureContext) -> dict[str, object]:
        release.wait(30)
        return {}

    monkeypatch.setitem(profilers.CAPTURES, "cpu", (profilers.THREADS, ("cpu", long_window)))
    watcher = Watcher(rules_off_config(tmp_path))
    try:
        # One window running, two queued: the fourth event finds the lane full.
        for n in range(1, 5):
            assert watcher.capturer.submit(job("cpu", n))
        wait_for(lambda: watcher.capturer.windows_dropped == 1)
        wait_for(lambda: len(list(tmp_path.rglob("event.json"))) == 1)
    finally:
        release.set()
        watcher.stop(10)
    (early,) = [e for e in _all(tmp_path) if e["id"].endswith("0004")]
    assert "threads.txt" in {f["name"] for f in early["files"]}
    assert early["captures"]["cpu"]["skipped"].startswith("another event's capture window")
    assert watcher.status().dropped == 1


def _all(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in tmp_path.rglob("event.json")]


def test_stop_cuts_a_running_window_and_skips_what_had_not_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    window_open = threading.Event()

    def window(ctx: profilers.CaptureContext) -> dict[str, object]:
        window_open.set()
        ctx.cut.wait(30)  # a window ends early when the process goes
        return {"file": None}

    monkeypatch.setitem(
        profilers.CAPTURES,
        "gcheap",
        (profilers.THREADS, ("heap", window), ("heap-2", window)),
    )
    watcher = Watcher(rules_off_config(tmp_path))
    assert watcher.capturer.submit(job("gcheap", 1))
    window_open.wait(30)
    watcher.stop(5)

    (event,) = _all(tmp_path)
    assert event["partial"] is True
    assert event["partial_reason"] == (
        "holmespy.stop() was called; cut short: heap; not taken: heap-2"
    )
    assert event["captures"]["heap"]["cut_short"] is True
    assert event["captures"]["heap-2"] == {"skipped": "not started: holmespy.stop() was called"}
    assert watcher.status().partial == 1
