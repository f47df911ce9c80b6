"""holmespy.loops: every asyncio loop and task of the process, seen from another thread.

Every test runs real event loops in real background threads (started and
stopped inside the test) and looks at them from the test's own thread, just
as holmespy's worker thread does in a host process.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
import types
import weakref
from collections.abc import Generator
from typing import Any

import pytest

from holmespy import loops
from tests.loop_thread import (
    HANG_GUARD,
    FakeTime,
    LoopThread,
    block_with_sleep,
    fetch,
    handler,
    line_of,
    wait_upstream,
)


async def park() -> None:
    await asyncio.sleep(3600)


# -- which tasks and loops are found -------------------------------------------


PER_THREAD = sys.version_info >= (3, 14)
"""Python 3.14+ keeps native tasks in per-thread lists and finds loops on the thread stacks."""


def test_every_supported_python_has_a_task_registry_named_for_its_versions() -> None:
    assert loops.tasks_supported() is True
    expected = "3.14+" if PER_THREAD else "3.11-3.13"
    assert loops.registry_name().startswith(expected + ": ")


def test_all_tasks_sees_tasks_of_every_loop_from_any_thread() -> None:
    with LoopThread("loop-A") as a, LoopThread("loop-B") as b:
        in_a = [a.spawn(park(), name=f"a-{i}") for i in range(3)]
        in_b = [b.spawn(park(), name=f"b-{i}") for i in range(2)]
        a.settle()
        b.settle()

        found = loops.all_tasks()

        assert set(in_a + in_b) <= set(found)
        assert all(not t.done() for t in found)


def test_loops_started_before_and_after_a_given_point_are_both_found() -> None:
    with LoopThread("early") as early:
        early.spawn(park())
        early.settle()
        names_before = [i.thread_name for i in loops.running_loops()]

        with LoopThread("late") as late:
            late.spawn(park())
            late.settle()
            names_after = [i.thread_name for i in loops.running_loops()]

    assert "early" in names_before
    assert "late" not in names_before
    assert {"early", "late"} <= set(names_after)


def test_count_tasks_counts_every_pending_task_of_every_running_loop() -> None:
    gc.collect()  # finished tasks of earlier tests, kept alive only by cycles
    before = loops.count_tasks()
    with LoopThread("loop-A") as a, LoopThread("loop-B") as b:
        for i in range(4):
            a.spawn(park(), name=f"a-{i}")
        for i in range(3):
            b.spawn(park(), name=f"b-{i}")
        a.settle()
        b.settle()

        assert loops.count_tasks() == before + 7

    assert loops.count_tasks() == before


def test_count_tasks_counts_the_tasks_of_a_loop_in_the_main_thread() -> None:
    # The loop runs in this (the main) thread; another thread counts, as the watcher would.
    gc.collect()
    before = loops.count_tasks()
    counted: list[int] = []

    async def main() -> None:
        parked = [asyncio.create_task(park()) for _ in range(5)]
        await asyncio.sleep(0)
        counter = threading.Thread(target=lambda: counted.append(loops.count_tasks()))
        counter.start()
        while counter.is_alive():  # keep the loop running, not blocked in join()
            await asyncio.sleep(0.001)
        for task in parked:
            task.cancel()
        await asyncio.gather(*parked, return_exceptions=True)

    assert threading.current_thread() is threading.main_thread()
    asyncio.run(main())

    assert counted == [before + 6]  # the five parked tasks and main() itself


@pytest.mark.skipif(PER_THREAD, reason="3.14+ counts only pending tasks of running loops")
def test_on_3_11_to_3_13_the_count_is_every_live_task_object() -> None:
    # The registry's size, read in ~1 µs: finished tasks still referenced and
    # tasks of a loop that does not run are in it (docs/versions.md says why
    # the task rule can afford that).
    gc.collect()
    before = loops.count_tasks()
    idle_loop = asyncio.new_event_loop()  # never runs
    try:
        leaked = idle_loop.create_task(park(), name="never-runs")
        with LoopThread("loop-A") as a:
            pending = [a.spawn(park(), name=f"pending-{i}") for i in range(4)]
            finished = [a.spawn(asyncio.sleep(0), name=f"done-{i}") for i in range(2)]
            a.settle()
            assert all(t.done() for t in finished)  # still referenced here, so still registered

            assert loops.count_tasks() == before + 1 + 4 + 2
            assert set(loops.all_tasks()) >= {leaked, *pending}  # listing is exact
            assert not set(loops.all_tasks()) & set(finished)
            del finished
            assert loops.count_tasks() == before + 1 + 4
    finally:
        leaked.cancel()
        idle_loop.run_until_complete(asyncio.gather(leaked, return_exceptions=True))
        idle_loop.close()


@pytest.mark.skipif(not PER_THREAD, reason="3.11-3.13 count the registry's size")
def test_on_3_14_the_count_is_pending_tasks_of_running_loops_only() -> None:
    gc.collect()
    before = loops.count_tasks()
    idle_loop = asyncio.new_event_loop()  # never runs: its task is a leak, not load
    try:
        leaked = idle_loop.create_task(park(), name="never-runs")
        with LoopThread("loop-A") as a:
            for i in range(4):
                a.spawn(park(), name=f"pending-{i}")
            finished = [a.spawn(asyncio.sleep(0), name=f"done-{i}") for i in range(2)]
            a.settle()
            assert all(t.done() for t in finished)

            assert loops.count_tasks() == before + 4
    finally:
        leaked.cancel()
        idle_loop.run_until_complete(asyncio.gather(leaked, return_exceptions=True))
        idle_loop.close()


@pytest.mark.skipif(not PER_THREAD, reason="pure-Python tasks have their own registry on 3.14+")
def test_pure_python_tasks_are_counted_beside_native_ones() -> None:
    # asyncio.tasks._PyTask registers in the Python-level sets, which the C
    # asyncio.all_tasks(loop) of 3.14+ does not read.
    gc.collect()
    before = loops.count_tasks()
    py_task_class: Any = asyncio.tasks._PyTask  # type: ignore[attr-defined]
    with LoopThread("loop-A") as a:
        native = [a.spawn(park()) for _ in range(2)]
        pure = [a.call(lambda: py_task_class(park(), loop=a.loop)) for _ in range(3)]
        a.settle()

        assert loops.count_tasks() == before + 5
        assert set(native + pure) <= set(loops.all_tasks())


def test_a_loop_that_stops_is_no_longer_counted_but_its_pending_tasks_are_listed() -> None:
    with LoopThread("stops-early", cancel_on_exit=False) as a:
        parked = [a.spawn(park(), name=f"left-{i}") for i in range(3)]
        a.settle()
        counted_running = loops.count_tasks()  # holmespy sees the loop while it runs
        a.loop.call_soon_threadsafe(a.loop.stop)
        a.thread.join(5)
        assert not a.loop.is_running()
        try:
            counted_stopped = loops.count_tasks()
            info = next(i for i in loops.running_loops() if i.loop is a.loop)
            listed = set(loops.all_tasks())
        finally:  # the loop no longer runs in its thread: finish its tasks from here
            for task in parked:
                task.cancel()
            a.loop.run_until_complete(asyncio.gather(*parked, return_exceptions=True))

    assert (info.running, info.thread_id, info.task_count) == (False, None, 3)
    assert set(parked) <= listed
    if PER_THREAD:
        assert counted_stopped == counted_running - 3
    else:  # the registry's size: a stopped loop's tasks are live objects
        assert counted_stopped == counted_running


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager tasks are new in Python 3.12")
def test_an_eager_task_still_in_its_first_step_is_found() -> None:
    # An eager task runs its first step inside create_task(); until it first
    # suspends, asyncio keeps it in a separate registry (_eager_tasks, 3.12 -
    # 3.13) or already in its thread's task list (3.14+).
    release = threading.Event()
    running = threading.Event()

    async def eager_then_block() -> None:
        running.set()
        block_with_sleep(release)

    gc.collect()
    before = loops.count_tasks()
    with LoopThread("loop-A") as a:
        factory = asyncio.eager_task_factory  # type: ignore[attr-defined,unused-ignore]
        a.call(lambda: a.loop.set_task_factory(factory))
        try:
            a.loop.call_soon_threadsafe(a.loop.create_task, eager_then_block())
            assert running.wait(5)
            names = [loops.await_chain(t)[0].qualname for t in loops.all_tasks()]
            count = loops.count_tasks()
        finally:
            release.set()

    assert any(n.endswith("eager_then_block") for n in names)
    assert count == before + 1


@pytest.mark.skipif(not PER_THREAD, reason="on 3.11-3.13 loops come from their tasks")
def test_a_loop_whose_run_forever_is_not_asyncios_is_found_through_asyncio_runner() -> None:
    # Like uvloop's Cython loop: no BaseEventLoop.run_forever frame on the
    # stack, but asyncio.run() / uvloop.run() run it from asyncio.Runner.run.
    class OwnRunForever(asyncio.SelectorEventLoop):
        def run_forever(self) -> None:
            self._run_forever_setup()  # type: ignore[attr-defined]
            try:
                while not self._stopping:  # type: ignore[attr-defined]
                    self._run_once()  # type: ignore[attr-defined]
            finally:
                self._run_forever_cleanup()  # type: ignore[attr-defined]

    parked = threading.Event()
    done = threading.Event()

    async def main() -> None:
        tasks = [asyncio.create_task(park()) for _ in range(4)]
        await asyncio.sleep(0)
        parked.set()
        while not done.is_set():
            await asyncio.sleep(0.005)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def run() -> None:
        with asyncio.Runner(loop_factory=OwnRunForever) as runner:
            runner.run(main())

    gc.collect()
    before = loops.count_tasks()
    thread = threading.Thread(target=run, name="own-loop")
    thread.start()
    try:
        assert parked.wait(5)
        count = loops.count_tasks()
        infos = [i for i in loops.running_loops() if isinstance(i.loop, OwnRunForever)]
    finally:
        done.set()
        thread.join(5)
    assert count == before + 5  # four parked tasks and main()
    assert [(i.thread_name, i.task_count) for i in infos] == [("own-loop", 5)]


@pytest.mark.skipif(not PER_THREAD, reason="3.11-3.13 count every loop at once")
def test_on_3_14_each_count_refreshes_one_loop_and_a_change_shows_within_one_round() -> None:
    # One C all_tasks(loop) call walks every task of the process, so with
    # several loops a count refreshes one of them and reuses the others'.
    gc.collect()
    with LoopThread("loop-A") as a, LoopThread("loop-B") as b:
        a.spawn(park())
        b.spawn(park())
        a.settle()
        b.settle()
        first = loops.count_tasks()  # both loops are new: both counted now
        for _ in range(5):
            a.spawn(park())
        a.settle()

        seen = [loops.count_tasks() for _ in range(2)]  # two loops: one round

    assert seen[-1] == first + 5
    assert set(seen) <= {first, first + 5}


@pytest.mark.skipif(not PER_THREAD, reason="3.11-3.13 need no loop discovery")
def test_on_3_14_with_many_threads_a_new_loop_is_found_within_the_discovery_stride() -> None:
    release = threading.Event()
    idle = [threading.Thread(target=release.wait, daemon=True) for _ in range(150)]
    for thread in idle:
        thread.start()
    try:
        loops.count_tasks()
        registry: Any = loops._REGISTRY
        stride = registry.discovery_stride
        assert stride == -(-threading.active_count() // loops.THREADS_PER_DISCOVERY) >= 3
        before = loops.count_tasks()
        with LoopThread("late") as late:
            for _ in range(3):
                late.spawn(park())
            late.settle()
            counts = [loops.count_tasks() for _ in range(stride)]
    finally:
        release.set()
        for thread in idle:
            thread.join(5)

    assert counts[-1] == before + 3


def test_holmespy_never_keeps_alive_a_loop_the_host_dropped() -> None:
    lt = LoopThread("short-lived")
    with lt:
        lt.spawn(park())
        lt.settle()
        loops.count_tasks()  # seen running, and remembered on 3.14+
        loops.all_tasks()
    ref = weakref.ref(lt.loop)
    del lt  # the host lets go of the loop, and holmespy counts no more

    gc.collect()
    assert ref() is None


def test_count_tasks_is_zero_when_the_python_has_no_task_registry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What an interpreter without a readable registry looks like to holmespy.
    monkeypatch.setattr(loops, "_REGISTRY", None)
    with LoopThread("loop-A") as a:
        a.spawn(park())
        a.settle()

        assert loops.tasks_supported() is False
        assert loops.all_tasks() == []
        assert loops.count_tasks() == 0
        assert loops.running_loops() == []
        assert "tasks" in loops.limitations()


def test_running_loops_names_the_thread_running_each_loop() -> None:
    with LoopThread("loop-A") as a, LoopThread("loop-B") as b:
        for _ in range(3):
            a.spawn(park())
        b.spawn(park())
        a.settle()
        b.settle()

        infos = {i.thread_name: i for i in loops.running_loops()}

        assert infos["loop-A"].loop is a.loop
        assert infos["loop-A"].thread_id == a.thread.ident
        assert infos["loop-A"].running is True
        assert infos["loop-A"].task_count == 3
        assert infos["loop-B"].task_count == 1


@pytest.mark.skipif(PER_THREAD, reason="3.14+ cannot find a loop that never ran")
def test_a_loop_that_never_ran_is_listed_with_its_pending_tasks() -> None:
    idle_loop = asyncio.new_event_loop()
    try:
        task = idle_loop.create_task(park())
        info = next(i for i in loops.running_loops() if i.loop is idle_loop)
        assert (info.running, info.thread_id, info.thread_name) == (False, None, None)
    finally:
        task.cancel()
        idle_loop.run_until_complete(asyncio.gather(task, return_exceptions=True))
        idle_loop.close()


@pytest.mark.skipif(not PER_THREAD, reason="3.11-3.13 list every loop's tasks")
def test_on_3_14_a_loop_that_never_ran_is_not_found_and_event_json_says_so() -> None:
    idle_loop = asyncio.new_event_loop()
    try:
        task = idle_loop.create_task(park())
        assert task not in loops.all_tasks()
        assert "tasks_of_unseen_loops" in loops.limitations()
    finally:
        task.cancel()
        idle_loop.run_until_complete(asyncio.gather(task, return_exceptions=True))
        idle_loop.close()


# -- probing a loop ------------------------------------------------------------


def test_probe_returns_how_fast_a_free_loop_runs_a_callback() -> None:
    fake = FakeTime()
    busy = threading.Event()  # the loop finishes a callback of its own before it answers

    def answer_after_a_quarter_second(answered: threading.Event, seconds: float) -> bool:
        fake.waits.append(seconds)
        fake.now += 0.25  # the loop's callback took a quarter of a second
        busy.set()
        return answered.wait(HANG_GUARD)  # the free loop answers, however slow the machine

    with LoopThread("loop-A") as a:
        a.loop.call_soon_threadsafe(busy.wait, HANG_GUARD)
        delay = loops.probe_loop(
            a.loop, timeout=1.0, clock=fake.clock, wait=answer_after_a_quarter_second
        )
    assert delay == 0.25
    assert fake.waits == [1.0]


def test_probe_of_a_blocked_loop_returns_none_on_the_real_clock() -> None:
    release = threading.Event()
    with LoopThread("loop-A") as a:
        try:
            a.loop.call_soon_threadsafe(block_with_sleep, release)
            delay = loops.probe_loop(a.loop, timeout=0.2)  # returning at all: it gave up
        finally:
            release.set()
    assert delay is None


def test_probe_gives_up_on_a_blocked_loop_after_the_timeout() -> None:
    release = threading.Event()
    fake = FakeTime()
    with LoopThread("loop-A") as a:
        try:
            a.loop.call_soon_threadsafe(block_with_sleep, release)
            delay = loops.probe_loop(a.loop, timeout=0.2, clock=fake.clock, wait=fake.wait)
        finally:
            release.set()
    assert delay is None
    assert fake.waits == [0.2]  # one wait, of exactly the timeout: not less, not more
    assert fake.now == 0.2


def test_probing_many_blocked_loops_shares_one_deadline() -> None:
    release = threading.Event()
    with LoopThread("loop-A") as a, LoopThread("loop-B") as b, LoopThread("loop-C") as c:
        fake = FakeTime(free=[c])
        try:
            for lt in (a, b):
                lt.loop.call_soon_threadsafe(block_with_sleep, release)
            delays = loops.probe_loops(
                [a.loop, b.loop, c.loop], timeout=0.2, clock=fake.clock, wait=fake.wait
            )
        finally:
            release.set()
    assert delays[:2] == [None, None]
    assert delays[2] == 0.0  # the free loop still answers (before any time passed)
    # The first blocked loop uses up the deadline; the second gets what is left
    # of it (nothing), not a 0.2 s of its own: 0.2 s in all, not 2 x 0.2 s.
    assert fake.waits == [0.2, 0.0, 0.0]
    assert fake.now == 0.2


def test_a_loop_still_blocked_since_an_earlier_probe_is_not_sent_or_waited_for_again() -> None:
    waits: list[float] = []

    def wait(event: threading.Event, seconds: float) -> bool:
        waits.append(seconds)
        return event.wait(seconds)

    release = threading.Event()
    with LoopThread("loop-A") as a:
        try:
            a.loop.call_soon_threadsafe(block_with_sleep, release)
            assert loops.probe_loop(a.loop, timeout=0.1) is None
            first = loops.unanswered_since(a.loop)
            assert first is not None
            waits.clear()
            again = loops.probe_loop(a.loop, timeout=5.0, wait=wait)
            assert loops.unanswered_since(a.loop) == first  # no second probe was sent
        finally:
            release.set()
        assert again is None
        assert waits == []  # known to be blocked: not waited for at all, let alone 5 s
        a.settle()  # free again: it has run the first probe's callback
        assert loops.unanswered_since(a.loop) is None
        assert loops.probe_loop(a.loop, timeout=5.0) is not None


def test_probing_a_closed_or_stopped_loop_returns_none_without_raising() -> None:
    closed = asyncio.new_event_loop()
    closed.close()
    stopped = asyncio.new_event_loop()
    try:
        assert loops.probe_loop(closed, timeout=0.1) is None
        assert loops.probe_loop(stopped, timeout=0.1) is None
    finally:
        stopped.close()


# -- await chains --------------------------------------------------------------


def test_await_chain_runs_from_the_task_coroutine_to_the_future_it_waits_on() -> None:
    with LoopThread("loop-A") as a:
        task = a.spawn(handler())
        a.settle()
        chain = loops.await_chain(task)

    assert [link.qualname for link in chain] == [
        "handler",
        "fetch",
        "wait_upstream",
        "sleep",  # asyncio.sleep, which awaits a timer future
        "<Future pending>",
    ]
    assert chain[0].module == handler.__module__
    assert chain[0].filename == handler.__code__.co_filename
    assert chain[0].lineno == line_of(handler, "await fetch()")
    assert chain[2].lineno == line_of(wait_upstream, "await asyncio.sleep(3600)")
    assert [link.kind for link in chain] == ["coroutine"] * 4 + ["future"]
    where = fetch.__code__.co_filename
    assert str(chain[1]) == f"fetch ({where}:{line_of(fetch, 'await wait_upstream()')})"


def test_await_chain_continues_into_an_awaited_task() -> None:
    async def supervise(child: asyncio.Task[None]) -> None:
        await child

    with LoopThread("loop-A") as a:
        child = a.spawn(handler(), name="child")
        parent = a.spawn(supervise(child), name="parent")
        a.settle()
        chain = loops.await_chain(parent)

    assert [link.qualname.rsplit(".", 1)[-1] for link in chain] == [
        "supervise",
        "<Task pending>",  # kind "task": the chain goes on inside the awaited task
        "handler",
        "fetch",
        "wait_upstream",
        "sleep",
        "<Future pending>",
    ]
    assert chain[1].kind == "task"


def test_await_chain_ends_at_a_plain_future() -> None:
    async def wait_for_reply(reply: asyncio.Future[str]) -> str:
        return await reply

    with LoopThread("loop-A") as a:
        reply: asyncio.Future[str] = a.call(a.loop.create_future)
        task = a.spawn(wait_for_reply(reply))
        a.settle()
        chain = loops.await_chain(task)

    assert [(link.qualname, link.kind) for link in chain] == [
        ("test_await_chain_ends_at_a_plain_future.<locals>.wait_for_reply", "coroutine"),
        ("<Future pending>", "future"),
    ]
    assert chain[-1].module == "_asyncio"


def test_await_chain_goes_through_async_generators_and_generator_coroutines() -> None:
    async def ticks() -> Any:
        yield 1
        await asyncio.sleep(3600)
        yield 2

    async def consume() -> None:
        async for _ in ticks():
            pass

    @types.coroutine
    def legacy() -> Generator[Any, None, None]:
        yield from asyncio.sleep(3600).__await__()

    async def call_legacy() -> None:
        await legacy()

    with LoopThread("loop-A") as a:
        agen_task = a.spawn(consume())
        legacy_task = a.spawn(call_legacy())
        a.settle()
        agen_chain = loops.await_chain(agen_task)
        legacy_chain = loops.await_chain(legacy_task)

    assert [(link.qualname.rsplit(".", 1)[-1], link.kind) for link in agen_chain] == [
        ("consume", "coroutine"),
        ("ticks", "async_generator"),
        ("sleep", "coroutine"),
        ("<Future pending>", "future"),
    ]
    assert agen_chain[1].lineno == line_of(ticks, "await asyncio.sleep(3600)")
    assert [(link.qualname.rsplit(".", 1)[-1], link.kind) for link in legacy_chain] == [
        ("call_legacy", "coroutine"),
        ("legacy", "generator"),
        ("sleep", "coroutine"),
        ("<Future pending>", "future"),
    ]


def test_await_chain_is_cut_at_the_depth_cap() -> None:
    async def nest(depth: int) -> None:
        if depth:
            await nest(depth - 1)
        else:
            await asyncio.sleep(3600)

    with LoopThread("loop-A") as a:
        task = a.spawn(nest(150))
        a.settle()
        chain = loops.await_chain(task, max_depth=100)

    assert len(chain) == 101
    assert chain[-1].kind == "truncated"
    assert chain[-1].qualname == "<chain cut at 100 links>"


def test_await_chain_stops_at_a_cycle_of_tasks_awaiting_each_other() -> None:
    async def wait_on(tasks: dict[str, asyncio.Task[None]], other: str) -> None:
        await tasks[other]

    # Two tasks awaiting each other are deadlocked for good (even Task.cancel()
    # recurses forever on them), so this loop is abandoned rather than cleaned up.
    with LoopThread("deadlocked", cancel_on_exit=False) as a:
        a.loop.set_exception_handler(lambda loop, context: None)  # "destroyed but pending"

        def start_deadlock() -> dict[str, asyncio.Task[None]]:
            tasks: dict[str, asyncio.Task[None]] = {}
            tasks["a"] = a.loop.create_task(wait_on(tasks, "b"))
            tasks["b"] = a.loop.create_task(wait_on(tasks, "a"))
            return tasks

        tasks = a.call(start_deadlock)
        a.settle()
        chain = loops.await_chain(tasks["a"])

    assert [link.kind for link in chain] == ["coroutine", "task", "coroutine", "truncated"]
    assert chain[-1].qualname == "<await cycle>"
    del tasks
    gc.collect()


def test_await_chains_of_many_tasks_match_one_by_one() -> None:
    with LoopThread("loop-A") as a:
        tasks = [a.spawn(handler()) for _ in range(20)] + [a.spawn(park()) for _ in range(5)]
        a.settle()
        batch = loops.await_chains(tasks)
        single = [loops.await_chain(t) for t in tasks]
    assert batch == single
    assert len({tuple(c) for c in batch}) == 2
