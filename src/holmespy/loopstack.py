"""The asyncio loop a thread runs, read from its stack; and the one a fork was made inside.

The loop watchdog is built only once the host has imported asyncio (a
process that never does has no loop to watch, and start-up must not import
asyncio: tests/test_startup.py). A fork, though, can come at any time,
including from inside a loop before the watchdog exists: multiprocessing's
`fork` method from a handler, where the child runs its job inside the
callback it was forked from and never returns to the loop. The child's copy
of that loop still says it runs, on a thread the child has (the forking
one), yet it never runs a callback again: watched, it would read as a stall
from the fork on. So the loop is noted in every child, right after the fork,
by a hook registered when start-up imports this module (`stackwatch`), and
the child's watchdog leaves it alone until it stops.

Nothing here imports asyncio. The two code objects that mark a loop's
frames are looked up in `sys.modules`: without asyncio imported no loop can
be running (uvloop's runs through `asyncio.Runner`), and the child's hook
returns at once. `holmespy.loops` finds loops with `loop_on_stack` too.
"""

from __future__ import annotations

import os
import sys
import weakref
from collections.abc import Callable

TYPE_CHECKING = False  # typing's, without importing typing at start()
if TYPE_CHECKING:
    from typing import Any

__all__ = ["MAX_STACK_WALK", "inherited_still_running", "is_running", "loop_on_stack"]

MAX_STACK_WALK = 1000
"""Frames walked down one thread's stack looking for the loop it runs (a runaway recursion
is deeper than any real server's stack, and the loop frame sits near the bottom anyway)."""

_codes: tuple[Any, Any] | None = None


def loop_codes() -> tuple[Any, Any]:
    """(`BaseEventLoop.run_forever`'s code, `asyncio.Runner.run`'s code), None where missing.

    `BaseEventLoop.run_forever` (3.4+): every stdlib loop, whichever way it is
    run (`asyncio.run`, `run_until_complete`, `run_forever`), runs in this
    frame, with `self` the loop. `asyncio.Runner.run` (3.11+), with
    `self._loop` its loop (private, unchanged 3.11 through 3.15; missing, the
    loop is not found this way): how `asyncio.run()` and `uvloop.run()` run a
    loop whose `run_forever` is not Python code (uvloop's is Cython). Read
    from `sys.modules` (never imported from here), and kept once both are
    found.
    """
    global _codes
    if _codes is not None:
        return _codes
    events = sys.modules.get("asyncio.base_events")
    runners = sys.modules.get("asyncio.runners")
    run_forever = getattr(
        getattr(getattr(events, "BaseEventLoop", None), "run_forever", None), "__code__", None
    )
    runner_run = getattr(getattr(getattr(runners, "Runner", None), "run", None), "__code__", None)
    found = (run_forever, runner_run)
    if run_forever is not None and runner_run is not None:
        _codes = found
    return found


def loop_on_stack(frame: Any) -> Any:
    """The loop that the thread whose innermost frame is `frame` runs, or None."""
    if frame is None:
        return None
    run_forever, runner_run = loop_codes()
    if run_forever is None and runner_run is None:
        return None  # asyncio is not imported (or not yet whole): no loop runs
    depth = 0
    while frame is not None and depth < MAX_STACK_WALK:
        code = frame.f_code
        if code is run_forever:
            return frame.f_locals.get("self")
        if code is runner_run:
            return getattr(frame.f_locals.get("self"), "_loop", None)
        frame = frame.f_back
        depth += 1
    return None


def is_running(loop: Any) -> bool:
    try:
        return bool(loop.is_running())
    except Exception:
        return False


_inherited: dict[int, Callable[[], Any]] = {}
"""In a forked child: the loop the forking thread was inside, by id, until it stops."""


def note_inherited_loop() -> None:
    """Runs in every forked child, right after fork(): one walk of this thread's stack."""
    _inherited.clear()
    if "asyncio" not in sys.modules:
        return  # no loop can be running: nothing to walk
    try:
        loop = loop_on_stack(sys._getframe())
        if loop is not None and is_running(loop):
            _inherited[id(loop)] = _weak(loop)
    except Exception:  # never raise out of the host's fork()
        _inherited.clear()


def inherited_still_running() -> dict[int, Callable[[], Any]]:
    """The loop this child was forked inside, while it still runs (by id, to a reference).

    Once it stops (the child's code returned into it and it ended), a loop
    run again is the child's own.
    """
    for key, ref in list(_inherited.items()):
        loop = ref()
        if loop is None or not is_running(loop):
            _inherited.pop(key, None)
    return _inherited


def _weak(obj: Any) -> Callable[[], Any]:
    """A weak reference to `obj`, or (for a class without weakref support) a strong one."""
    try:
        return weakref.ref(obj)
    except TypeError:
        return lambda: obj


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=note_inherited_loop)
