"""One event's captures: in the plan's order, with the task dump beside the CPU window.

The task dump may wait up to its probe timeout for a blocked event loop;
beside the window, that wait no longer delays the event. The captures here
are stand-ins that record which thread ran them and what they were given.
"""

from __future__ import annotations

import errno
import threading
from pathlib import Path
from typing import Any

import pytest

from holmespy.config import Config
from holmespy.profilers import CaptureContext
from holmespy.profilers import plan as plan_mod
from holmespy.profilers.plan import run_captures

pytestmark = pytest.mark.timeout(30)


def context(tmp_path: Path) -> CaptureContext:
    return CaptureContext(
        directory=tmp_path, rule="cpu", config=Config(), exclude_threads=frozenset({1, 2})
    )


class Recorder:
    def __init__(self) -> None:
        self.errors: list[tuple[str, BaseException]] = []
        self.ran_on: dict[str, int] = {}
        self.excluded: dict[str, frozenset[int]] = {}

    def capture(self, name: str, body: Any = None) -> tuple[str, Any]:
        def run(ctx: CaptureContext) -> dict[str, Any]:
            self.ran_on[name] = threading.get_ident()
            self.excluded[name] = ctx.exclude_threads
            if body is not None:
                body()
            return {"file": f"{name}.txt"}

        return name, run

    def on_error(self, where: str, exc: BaseException) -> None:
        self.errors.append((where, exc))


def test_the_task_dump_runs_at_the_same_time_as_the_cpu_window(tmp_path: Path) -> None:
    both = threading.Barrier(2, timeout=10)  # passes only if the two run at once
    rec = Recorder()
    plan = (rec.capture("threads"), rec.capture("tasks", both.wait), rec.capture("cpu", both.wait))

    captures = run_captures(plan, context(tmp_path), rec.on_error)

    assert list(captures) == ["threads", "tasks", "cpu"]  # event.json keeps the plan's order
    assert all(c["file"] == f"{name}.txt" for name, c in captures.items())
    assert all(c["seconds"] >= 0 for c in captures.values())
    me = threading.get_ident()
    assert rec.ran_on["threads"] == rec.ran_on["cpu"] == me
    assert rec.ran_on["tasks"] != me
    # The profile leaves the task dump's thread out, as it does holmespy's others.
    assert rec.excluded["cpu"] == {1, 2, rec.ran_on["tasks"]}
    assert rec.errors == []


def test_without_a_window_after_it_the_task_dump_runs_in_turn(tmp_path: Path) -> None:
    rec = Recorder()
    plan = (rec.capture("tasks"), rec.capture("threads"))

    captures = run_captures(plan, context(tmp_path), rec.on_error)

    assert list(captures) == ["tasks", "threads"]
    assert set(rec.ran_on.values()) == {threading.get_ident()}


def test_a_task_dump_that_raises_beside_the_window_is_an_error_fact(tmp_path: Path) -> None:
    rec = Recorder()

    def broken() -> None:
        raise RuntimeError("dump bug")

    plan = (rec.capture("tasks", broken), rec.capture("cpu"))

    captures = run_captures(plan, context(tmp_path), rec.on_error)

    assert captures["tasks"]["error"] == "RuntimeError: dump bug"
    assert captures["cpu"]["file"] == "cpu.txt"
    assert [(where, str(exc)) for where, exc in rec.errors] == [("tasks capture", "dump bug")]


def test_a_full_disk_beside_the_window_fails_the_whole_event(tmp_path: Path) -> None:
    rec = Recorder()

    def full() -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    plan = (rec.capture("tasks", full), rec.capture("cpu"))

    with pytest.raises(OSError, match="No space left"):
        run_captures(plan, context(tmp_path), rec.on_error)


def test_a_task_dump_still_running_after_the_window_is_left_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(plan_mod, "SIDE_JOIN_GRACE", 0.05)
    release = threading.Event()
    rec = Recorder()
    plan = (rec.capture("tasks", lambda: release.wait(10)), rec.capture("cpu"))
    try:
        captures = run_captures(plan, context(tmp_path), rec.on_error)
    finally:
        release.set()

    assert captures["tasks"] == {"error": "still running 0.05 s after the window ended"}
    assert captures["cpu"]["file"] == "cpu.txt"
    assert [where for where, _ in rec.errors] == ["tasks capture"]
