"""Shared by the asyncio tests: a real event loop in its own thread, and a request path to park."""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import pytest

from holmespy import loops


class LoopThread:
    """A real event loop running forever in its own named thread, for one `with` block.

    On exit every task still pending on the loop is cancelled, the loop is
    stopped, its thread joined (bounded) and the loop closed.
    """

    def __init__(self, name: str, *, cancel_on_exit: bool = True) -> None:
        self.name = name
        self.cancel_on_exit = cancel_on_exit
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)

    def __enter__(self) -> LoopThread:
        self.thread.start()
        self.call(lambda: None)  # returns once the loop is running callbacks
        return self

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the loop's thread and return its result."""
        done: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def run() -> None:
            try:
                done.set_result(fn())
            except BaseException as exc:
                done.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return done.result(timeout=5)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = self.call(lambda: self.loop.create_task(coro, name=name))
        return task

    def settle(self) -> None:
        """Let every spawned task run up to the `await` it parks at."""
        for _ in range(3):
            self.call(lambda: None)

    def __exit__(self, *exc_info: object) -> None:
        async def cancel_all() -> None:
            me = asyncio.current_task()
            for _ in range(10):  # a task may catch one cancellation and keep waiting
                pending = [t for t in asyncio.all_tasks() if t is not me]
                if not pending:
                    return
                for t in pending:
                    t.cancel()
                await asyncio.wait(pending, timeout=0.5)

        try:
            if self.cancel_on_exit and self.loop.is_running():
                asyncio.run_coroutine_threadsafe(cancel_all(), self.loop).result(timeout=5)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=5)
            if not self.thread.is_alive():
                self.loop.close()


HANG_GUARD = 60.0
"""Seconds after which a blocked loop lets go by itself if a test failed to release it."""


def block_with_sleep(release: threading.Event) -> None:
    """Blocks its thread like a stray time.sleep() would, until the test releases it.

    It never lets go by itself while the test runs (however slow the machine),
    so a probe made before the release always meets a blocked loop.
    """
    deadline = time.monotonic() + HANG_GUARD
    while not release.is_set() and time.monotonic() < deadline:
        time.sleep(0.01)


class FakeTime:
    """A clock that moves only when a probe's wait runs out, and the waits the probe asked for.

    `wait` first lets each loop of `free` run everything scheduled on it so far
    (so a loop that can answer has answered), then returns at once: True if the
    probe's callback ran, else False after moving the clock by the whole wait,
    as a real wait on a loop that does not answer would.
    """

    def __init__(self, free: Sequence[LoopThread] = ()) -> None:
        self.now = 0.0
        self.free = list(free)
        self.waits: list[float] = []

    def clock(self) -> float:
        return self.now

    def wait(self, answered: threading.Event, seconds: float) -> bool:
        self.waits.append(seconds)
        for lt in self.free:
            lt.settle()
        if answered.is_set():
            return True
        self.now += seconds
        return False


def line_of(fn: Callable[..., Any], text: str) -> int:
    """The line number of the first line of `fn` containing `text`."""
    source, first = inspect.getsourcelines(fn)
    return first + next(i for i, line in enumerate(source) if text in line)


# A request path three coroutines deep, parked on a timer like a handler
# waiting on a slow upstream.
async def handler() -> None:
    await fetch()


async def fetch() -> None:
    await wait_upstream()


async def wait_upstream() -> None:
    await asyncio.sleep(3600)


# Tests that need holmespy to find running loops (the loop watchdog's discovery):
# `loops.running_loops()` finds them where the task registry can be read.
needs_loop_discovery = pytest.mark.skipif(
    not loops.tasks_supported(),
    reason="running loops are not found on this Python yet (loops.running_loops)",
)
