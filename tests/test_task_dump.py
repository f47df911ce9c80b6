"""tasks.txt: every asyncio task of every loop, grouped by identical await chain.

Each test runs real event loops in real background threads (started and
stopped inside the test), parks tasks at known `await`s and reads the dump
from the test's thread, as holmespy's worker thread would.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import json
import os
import re
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from holmespy import loops
from holmespy.config import Config
from holmespy.profilers import CaptureContext, capture_tasks
from holmespy.profilers.tasks import dump_tasks, format_tasks, render
from holmespy.taskdump import TaskDump
from tests import loop_thread
from tests.loop_thread import (
    FakeTime,
    LoopThread,
    block_with_sleep,
    fetch,
    handler,
    line_of,
    wait_upstream,
)


def groups(dump: str) -> list[list[str]]:
    """The dump's task groups, each as its lines: `[n] N tasks on ...`, chain, `tasks: ...`."""
    blocks = dump.split("\n\n")
    return [b.splitlines() for b in blocks if re.match(r"\[\d+\] ", b)]


# ... and a different one: consumers waiting on an empty queue.
async def consume(queue: asyncio.Queue[int]) -> None:
    await queue.get()


async def park() -> None:
    await asyncio.sleep(3600)


def test_tasks_parked_at_the_same_await_form_one_group_largest_first() -> None:
    with LoopThread("loop-A") as a:
        queue: asyncio.Queue[int] = a.call(asyncio.Queue)
        for i in range(5):
            a.spawn(consume(queue), name=f"consumer-{i}")
        for i in range(50):
            a.spawn(handler(), name=f"request-{i}")
        a.settle()
        dump = format_tasks()

    big, small = groups(dump)
    assert big[0] == "[1] 50 tasks on loop 1"
    assert small[0] == "[2] 5 tasks on loop 1"
    # The chain, outermost coroutine first, each `function (file:line)` over its source line.
    chains = handler.__code__.co_filename  # where the shared request path is defined
    assert big[1:7] == [
        f"    handler ({chains}:{line_of(handler, 'await fetch()')})",
        "        await fetch()",
        f"    fetch ({chains}:{line_of(fetch, 'await wait_upstream()')})",
        "        await wait_upstream()",
        f"    wait_upstream ({chains}:{line_of(wait_upstream, 'await asyncio.sleep')})",
        "        await asyncio.sleep(3600)",
    ]
    assert big[7].startswith("    sleep (")  # inside asyncio
    assert big[-2] == "    <Future pending>"
    # Up to ten names, shortest first, then how many more.
    assert big[-1] == (
        "  tasks: " + ", ".join(f"request-{i} (pending)" for i in range(10)) + ", ... and 40 more"
    )
    assert small[1].startswith("    consume (")
    assert small[-1] == "  tasks: " + ", ".join(f"consumer-{i} (pending)" for i in range(5))


def test_header_gives_pid_loops_tasks_and_time() -> None:
    now = dt.datetime(2026, 5, 10, 12, 30, 0, 123000, tzinfo=dt.UTC)
    with LoopThread("loop-A") as a:
        for _ in range(3):
            a.spawn(park())
        a.settle()
        dump = format_tasks(now=now)

    assert dump.startswith(
        f"holmespy asyncio task dump: pid {os.getpid()}, 1 loop, 3 tasks,"
        " at 2026-05-10T12:30:00.123Z, "
    )


def test_each_loop_is_listed_with_its_thread_and_probe_time() -> None:
    with LoopThread("loop-A") as a, LoopThread("loop-B") as b:
        for _ in range(2):
            a.spawn(park())
        b.spawn(park())
        a.settle()
        b.settle()
        dump = format_tasks()

    assert ", 2 loops, 3 tasks, " in dump.splitlines()[0]
    loop_lines = [line for line in dump.splitlines() if line.startswith("loop ")]
    assert re.fullmatch(
        rf'loop 1: _UnixSelectorEventLoop running in thread "loop-A" \(ident {a.thread.ident}\),'
        r" 2 tasks; ran a probe callback after \d+\.\d\d ms",
        loop_lines[0],
    )
    assert 'running in thread "loop-B"' in loop_lines[1]
    assert ", 1 task;" in loop_lines[1]
    assert "LOOP BLOCKED" not in dump


def test_a_group_spread_over_two_loops_says_how_many_are_on_each() -> None:
    with LoopThread("loop-A") as a, LoopThread("loop-B") as b:
        for _ in range(3):
            a.spawn(park())
        b.spawn(park())
        a.settle()
        b.settle()
        dump = format_tasks()

    assert groups(dump)[0][0] == "[1] 4 tasks on loops 1 (3), 2 (1)"


def test_a_blocked_loop_is_reported_with_what_its_thread_is_executing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    release = threading.Event()
    probed: list[tuple[list[str], float]] = []
    with LoopThread("loop-stuck") as stuck, LoopThread("loop-fine") as fine:
        fake = FakeTime(free=[fine])
        real_probe_loops = loops.probe_loops
        names = {id(stuck.loop): "stuck", id(fine.loop): "fine"}

        def probe_on_fake_time(
            probed_loops: Sequence[asyncio.AbstractEventLoop], timeout: float
        ) -> list[float | None]:
            probed.append(([names[id(loop)] for loop in probed_loops], timeout))
            return real_probe_loops(probed_loops, timeout, clock=fake.clock, wait=fake.wait)

        monkeypatch.setattr(loops, "probe_loops", probe_on_fake_time)
        stuck.spawn(park())
        fine.spawn(park())
        stuck.settle()
        fine.settle()
        try:
            stuck.loop.call_soon_threadsafe(block_with_sleep, release)
            dump = format_tasks(probe_timeout=0.5)
        finally:
            release.set()

    # One bounded probe of both loops, never waiting for the loop itself: the
    # free loop answered at once and the stuck one cost the probe's 0.5 s,
    # nothing more (how fast the rest of the dump is: benchmarks/capture_pause.py).
    assert probed == [(["fine", "stuck"], 0.5)]
    assert fake.waits == [0.5, 0.5]
    assert fake.now == 0.5
    lines = dump.splitlines()
    at = lines.index(
        'LOOP BLOCKED: loop in thread "loop-stuck" did not run a callback within 0.5 s;'
        " its thread is executing:"
    )
    # Innermost call first: the function that blocks, on the line calling time.sleep.
    assert lines[at + 1].startswith(f"    block_with_sleep ({loop_thread.__file__}:")
    assert "time.sleep" in lines[at + 2]
    assert any("BaseEventLoop.run_forever" in line for line in lines[at:])
    assert sum("LOOP BLOCKED" in line for line in lines) == 1  # loop-fine answered


def test_a_loop_blocked_since_an_earlier_dump_is_reported_without_waiting_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    waits: list[float] = []
    probe = loops.probe_loops

    def recording_probe(
        probed: Sequence[asyncio.AbstractEventLoop], timeout: float
    ) -> list[float | None]:
        def wait(event: threading.Event, seconds: float) -> bool:
            waits.append(seconds)
            return event.wait(seconds)

        return probe(probed, timeout, wait=wait)

    monkeypatch.setattr(loops, "probe_loops", recording_probe)
    release = threading.Event()
    with LoopThread("loop-stuck") as stuck:
        stuck.spawn(park())
        stuck.settle()
        try:
            stuck.loop.call_soon_threadsafe(block_with_sleep, release)
            first = format_tasks(probe_timeout=0.1)
            waits.clear()
            second = format_tasks(probe_timeout=5.0)
        finally:
            release.set()

    assert 'LOOP BLOCKED: loop in thread "loop-stuck" did not run a callback within 0.1 s' in first
    assert re.search(
        r'LOOP BLOCKED: loop in thread "loop-stuck" has not yet run a probe callback'
        r" sent \d+\.\d s ago; its thread is executing:",
        second,
    )
    assert "block_with_sleep" in second
    assert waits == []  # known to be blocked: the second dump does not wait its 5 s


def test_a_task_blocking_its_loop_is_shown_as_running() -> None:
    release = threading.Event()
    crunching = threading.Event()

    async def crunch() -> None:
        crunching.set()
        block_with_sleep(release)  # CPU-bound or blocking work inside a coroutine

    with LoopThread("loop-A") as a:
        try:
            a.spawn(crunch(), name="cruncher")
            assert crunching.wait(5)
            dump = format_tasks(probe_timeout=0.1)
        finally:
            release.set()

    assert "LOOP BLOCKED" in dump
    assert "cruncher (running)" in dump


def test_a_task_awaiting_another_task_shows_both_chains_in_one() -> None:
    async def supervise(child: asyncio.Task[None]) -> None:
        await child

    with LoopThread("loop-A") as a:
        child = a.spawn(handler(), name="child")
        a.spawn(supervise(child), name="supervisor")
        a.settle()
        dump = format_tasks()

    (group,) = [g for g in groups(dump) if "supervisor" in g[-1]]
    functions = [
        line.split(" (")[0].strip() for line in group[1:-1] if not line.startswith(" " * 8)
    ]
    assert functions == [
        "test_a_task_awaiting_another_task_shows_both_chains_in_one.<locals>.supervise",
        "<Task pending>",
        "handler",
        "fetch",
        "wait_upstream",
        "sleep",
        "<Future pending>",
    ]


def test_a_task_awaiting_a_plain_future_ends_its_chain_there() -> None:
    async def wait_for_reply(reply: asyncio.Future[str]) -> None:
        await reply

    with LoopThread("loop-A") as a:
        reply: asyncio.Future[str] = a.call(a.loop.create_future)
        a.spawn(wait_for_reply(reply), name="rpc")
        a.settle()
        dump = format_tasks()

    (group,) = [g for g in groups(dump) if "rpc" in g[-1]]
    assert group[1].startswith("    test_a_task_awaiting_a_plain_future_ends_its_chain_there.")
    assert group[2] == "        await reply"
    assert group[3] == "    <Future pending>"


def test_a_cancelled_task_still_cleaning_up_is_shown_as_cancelling() -> None:
    async def slow_cleanup() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await asyncio.sleep(3600)  # e.g. a graceful close that never finishes
            raise

    with LoopThread("loop-A") as a:
        task = a.spawn(slow_cleanup(), name="closing")
        a.settle()
        a.call(task.cancel)
        a.settle()
        dump = format_tasks()

    assert "closing (pending, cancelling)" in dump


STOPPED_LOOP_LINE = re.compile(
    r"loop \d+: _UnixSelectorEventLoop not running \(stopped\), 1 pending task"
    r" \(they will never run unless the loop is restarted\)"
)


def test_tasks_of_a_loop_that_stopped_are_listed_as_never_running() -> None:
    with LoopThread("stops-early", cancel_on_exit=False) as a:
        leaked = a.spawn(park(), name="orphan")
        a.settle()
        loops.count_tasks()  # a watcher tick while the loop runs (3.14+ finds loops so)
        a.loop.call_soon_threadsafe(a.loop.stop)
        a.thread.join(5)
        try:
            dump = format_tasks()
        finally:
            leaked.cancel()
            a.loop.run_until_complete(asyncio.gather(leaked, return_exceptions=True))

    assert any(STOPPED_LOOP_LINE.fullmatch(line) for line in dump.splitlines())
    assert "orphan (pending)" in dump


@pytest.mark.skipif(sys.version_info >= (3, 14), reason="3.14+ cannot find a loop that never ran")
def test_tasks_of_a_loop_that_never_ran_are_listed_as_never_running() -> None:
    idle_loop = asyncio.new_event_loop()
    try:
        leaked = idle_loop.create_task(park(), name="orphan")
        dump = format_tasks()
    finally:
        leaked.cancel()
        idle_loop.run_until_complete(asyncio.gather(leaked, return_exceptions=True))
        idle_loop.close()

    assert any(STOPPED_LOOP_LINE.fullmatch(line) for line in dump.splitlines())
    assert "orphan (pending)" in dump


def test_with_no_tasks_the_dump_says_so() -> None:
    gc.collect()
    if loops.all_tasks():
        pytest.skip("an earlier test left pending tasks behind")
    dump = format_tasks()
    assert dump.splitlines()[1:] == ["no asyncio tasks"]
    assert ", 0 loops, 0 tasks, " in dump.splitlines()[0]


def test_on_a_python_without_a_task_registry_the_dump_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(loops, "_REGISTRY", None)  # e.g. an interpreter without asyncio internals
    dump = format_tasks()
    assert "asyncio task listing is not supported on Python" in dump


def test_ten_thousand_tasks_at_one_await_are_dumped_as_one_group() -> None:
    with LoopThread("loop-A") as a:

        def start() -> None:
            for i in range(10_000):
                a.loop.create_task(handler(), name=f"request-{i}")

        a.call(start)
        a.settle()
        dump = format_tasks()

    # How fast: benchmarks/capture_pause.py (`format_tasks(), N tasks`), not a test.
    assert groups(dump)[0][0] == "[1] 10000 tasks on loop 1"
    assert groups(dump)[0][-1].endswith(", ... and 9990 more")


def test_the_json_and_the_text_are_one_dump() -> None:
    with LoopThread("loop-A") as a:
        for i in range(20):
            a.spawn(handler(), name=f"request-{i}")
        a.spawn(park(), name="idle")
        a.settle()
        dump = dump_tasks()

    read_back = TaskDump.from_json(json.loads(json.dumps(dump.to_json())))

    assert read_back == dump
    assert render(read_back) == render(dump)  # tasks.txt is a rendering of these objects
    assert [g.count for g in dump.groups] == [20, 1]
    assert [name for name, _ in dump.groups[0].tasks][:2] == ["request-0", "request-1"]


def test_the_task_capture_writes_the_text_and_its_json(tmp_path: Path) -> None:
    with LoopThread("loop-A") as a:
        a.spawn(park(), name="idle")
        a.settle()
        facts = capture_tasks(CaptureContext(directory=tmp_path, rule="task", config=Config()))

    assert facts == {"file": "tasks.txt", "data": "tasks.json"}
    dump, problems = TaskDump.loads((tmp_path / "tasks.json").read_bytes())
    assert problems == []
    assert any(name == "idle" for g in dump.groups for name, _ in g.tasks)
    assert "  tasks: idle (pending)" in (tmp_path / "tasks.txt").read_text()
