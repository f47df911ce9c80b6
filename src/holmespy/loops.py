"""Every asyncio event loop and task in the process, seen from any thread.

This is the ONLY module of holmespy that touches private asyncio (and a few
private interpreter) internals, with `holmespy.loopstack`, its part that
runs before asyncio is imported (which loop a thread's stack runs). Each one
is named in a comment saying which Python versions have it and what happens
when it is missing; every public function here degrades to an empty or
"unknown" answer instead of raising.

Where tasks live differs by Python version, so the registry is read by one of
two classes named after the versions they serve (`_WeakSetRegistry` for 3.11
to 3.13, `_PerThreadRegistry` for 3.14 and later), chosen once at import;
`docs/versions.md` says what each version gives.

The functions are called from holmespy's own worker thread while the host's
loops keep running in theirs, so they only read: they copy registries before
iterating them, never call `repr()` on host objects, and never wait without a
deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import operator
import os
import sys
import threading
import time
import types
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from holmespy import loopstack

__all__ = [
    "ChainFrame",
    "LoopInfo",
    "all_tasks",
    "await_chain",
    "await_chains",
    "count_tasks",
    "limitations",
    "probe_loop",
    "probe_loops",
    "registry_name",
    "running_loops",
    "tasks_supported",
    "unanswered_since",
    "waiting_for_events",
]

MAX_CHAIN_DEPTH = 100
"""Longest await chain `await_chain` follows; it also stops a cycle (task A awaits B awaits A)."""

MAX_STACK_WALK = loopstack.MAX_STACK_WALK

_COPY_RETRIES = 1000
"""Attempts to copy a registry that another thread is mutating (asyncio.all_tasks uses 1000)."""


# -- the task registries ------------------------------------------------------
#
# asyncio has no public "every task of every loop" API: asyncio.all_tasks(loop)
# needs a loop, and called without one it needs to run inside that loop.
#
# * Python 3.7 - 3.11: `asyncio.tasks._all_tasks`, a module-global WeakSet of
#   every task of every loop (the C `_asyncio` module re-exports its own set
#   under that name, so native tasks are in it too).
# * Python 3.12 - 3.13: renamed `asyncio.tasks._scheduled_tasks` (same WeakSet)
#   plus `asyncio.tasks._eager_tasks`, a plain set of the eager tasks that are
#   still running their first step (eager task factory, new in 3.12).
# * Python 3.14+: native tasks (C `asyncio.Task` and its subclasses) live in
#   per-thread linked lists inside the C module, walked only by the C
#   `asyncio.all_tasks(loop)` for one known loop; third-party task classes are
#   in a WeakSet of the C module that the same call includes. Pure-Python
#   tasks (`asyncio.tasks._PyTask`) still register in the Python
#   `_scheduled_tasks` / `_eager_tasks`, which the C call does not read. The
#   loops themselves are registered nowhere: they are found on the thread
#   stacks (the frame running `BaseEventLoop.run_forever` holds its loop).
#
# The registries are looked up once, at import: asyncio binds them when it is
# imported and never rebinds them, and count_tasks() runs on every watcher tick.


def _copy(collection: Any) -> list[Any]:
    """`list(collection)`, retried while another thread changes its size.

    Another thread (any loop creating or finishing a task) can mutate the set
    while we copy it; CPython then raises RuntimeError ("Set changed size
    during iteration"), exactly the case asyncio.all_tasks retries. Under the
    GIL a plain-set copy is a single C call and cannot be interrupted, so the
    retry matters only on free-threaded builds.
    """
    for _ in range(_COPY_RETRIES):
        try:
            return list(collection)
        except RuntimeError:
            continue
    return []


def _weak_refs(weak: Any) -> list[Any]:
    """The weak references held by a WeakSet, copied without iterating the WeakSet.

    `WeakSet.data` (the underlying set of weakrefs; stdlib, undocumented but
    present in every Python 3 release) is copied in one C call. Iterating the
    WeakSet itself would also register an `_IterationGuard` on the host's set,
    i.e. briefly change how the host's threads remove dead tasks; reading
    `.data` changes nothing. Fallback when it is missing: the public iterator.
    """
    data = getattr(weak, "data", None)
    if isinstance(data, set):
        return _copy(data)
    return [weakref.ref(t) for t in _copy(weak)]


def _registered(weak: Any, eager: Any) -> list[Any]:
    """Every task object in a WeakSet of tasks and a set of eager tasks, done or not."""
    found: list[Any] = []
    if weak is not None:
        found.extend(t for t in map(operator.call, _weak_refs(weak)) if t is not None)
    if eager is not None:
        found.extend(_copy(eager))
    return found


def _is_running(loop: Any) -> bool:
    try:
        return bool(loop.is_running())
    except Exception:
        return False


def _pending_of_running_loops(tasks: Iterable[Any]) -> int:
    """How many of `tasks` are not done and belong to a loop that is running now."""
    running: dict[int, bool] = {}
    n = 0
    for task in tasks:
        try:
            if task.done():
                continue
            loop = task.get_loop()
            ok = running.get(id(loop))
            if ok is None:
                ok = running[id(loop)] = _is_running(loop)
            n += ok
        except Exception:
            continue
    return n


class _WeakSetRegistry:
    """Python 3.11 - 3.13: one process-wide WeakSet of every task, plus (3.12+) the eager set.

    Counting reads the registry's size: the number of live Task objects of
    every loop. That is ~1 µs whatever the number of tasks, where filtering
    them (not done, loop running) costs ~65 µs per 1,000 tasks. The size also
    includes finished tasks that something still references and pending tasks
    of loops that are not running; docs/versions.md says why the task rule can
    afford that. Listing (`tasks()`, for tasks.txt) copies the registry and is
    exact.
    """

    name = "3.11-3.13: process-wide WeakSet of tasks"

    def __init__(self, weak: Any, eager: Any) -> None:
        self._weak = weak
        self._eager = eager

    def count(self) -> int:
        # WeakSet.__len__ subtracts references of tasks being collected right now.
        n = len(self._weak)
        if self._eager is not None:
            n += len(self._eager)
        return n

    def tasks(self) -> list[Any]:
        return _registered(self._weak, self._eager)

    def loop_threads(self) -> dict[int, int]:
        return {}  # BaseEventLoop._thread_id names them (see _loop_thread_id)


_RUN_FOREVER_CODE, _RUNNER_RUN_CODE = loopstack.loop_codes()
"""`asyncio.BaseEventLoop.run_forever` and `asyncio.Runner.run`: what marks a loop's frame on a
thread's stack (`holmespy.loopstack`, which start-up and the fork hook use without asyncio)."""

_loop_on_stack = loopstack.loop_on_stack


def _running_loops_on_stacks() -> list[tuple[int, Any]]:
    """(thread ident, loop) for every loop some thread is running now, from the thread stacks.

    `sys._current_frames()` (CPython, every version) holds each thread's
    innermost frame; the walk only reads `f_code`, `f_back` and the `self`
    local of two stdlib frames. A loop found this way whose `is_running()`
    is false (it is starting up or shutting down) is left out.
    """
    found: list[tuple[int, Any]] = []
    seen: set[int] = set()
    frames = sys._current_frames()
    try:
        for tid, top in frames.items():
            try:
                loop = _loop_on_stack(top)
            except Exception:
                continue
            if loop is not None and id(loop) not in seen and _is_running(loop):
                seen.add(id(loop))
                found.append((tid, loop))
    finally:
        del frames  # other threads' frames keep their locals alive
    return found


THREADS_PER_DISCOVERY = 64
"""3.14+: looking for loops on the thread stacks costs ~1 µs per thread (~900 µs with 500
threads), so a count looks every time in a process of up to this many threads, and every
`ceil(threads / THREADS_PER_DISCOVERY)` counts in a larger one (between two looks the loops
already known are still counted, and a loop that stops is dropped at once). Set by the
thread count rather than a timing, so that the same process always behaves the same."""

MAX_DISCOVERY_STRIDE = 12
"""3.14+: a loop started in a process with many threads is found within this many counts."""


class _PerThreadRegistry:
    """Python 3.14+: native tasks in the C module's per-thread lists, listed one loop at a time.

    Loops are found on the thread stacks (see `THREADS_PER_DISCOVERY` for
    how often). The C `asyncio.all_tasks(loop)` gives one loop's pending
    tasks, but walks every task of the process to do so (~30 µs per 1,000),
    so with several loops each count refreshes one loop in turn (and any loop
    never counted yet) and reuses the others' last counts: one loop, the
    usual case, is counted exactly every time, and a count costs one walk
    whatever the number of loops. Pending pure-Python tasks of running loops
    are added. Listing covers the running loops and the loops holmespy saw
    running that stopped since (their pending tasks never run: a leak worth
    showing); a loop that never ran while holmespy looked cannot be found.
    """

    name = "3.14+: per-thread task lists, loops found on the thread stacks"

    def __init__(self, c_all_tasks: Any, py_weak: Any, py_eager: Any) -> None:
        self._all_tasks = c_all_tasks
        self._py_weak = py_weak
        self._py_eager = py_eager
        self._lock = threading.Lock()  # the watcher counts while the capture worker lists
        self._seen: weakref.WeakSet[Any] = weakref.WeakSet()
        # Running loops by id(loop): (a weak reference to the loop, its thread).
        # Weak, so that holmespy never keeps a loop the host dropped alive,
        # even when counting stops; a loop that stops is dropped at the next count.
        self._running: dict[int, tuple[Callable[[], Any], int]] = {}
        self._counts: dict[int, int] = {}  # id(loop) -> its pending tasks at its last count
        self._counted_at: dict[int, int] = {}  # id(loop) -> the count() call that counted it
        self._calls = 0
        self._discover_in = 0
        self.discovery_stride = 1

    def _discover(self) -> None:
        threads = threading.active_count()
        self.discovery_stride = min(
            MAX_DISCOVERY_STRIDE, max(1, math.ceil(threads / THREADS_PER_DISCOVERY))
        )
        self._discover_in = self.discovery_stride - 1
        for tid, loop in _running_loops_on_stacks():
            key = id(loop)
            known = self._running.get(key)
            if known is None or known[0]() is not loop:  # new (an id may be reused)
                self._forget(key)
                # A loop class without weakref support raises TypeError: not remembered.
                with contextlib.suppress(TypeError):
                    self._seen.add(loop)
            self._running[key] = (_weak(loop), tid)

    def _drop_stopped(self) -> None:
        for key, (ref, _) in list(self._running.items()):
            loop = ref()
            if loop is None or not _is_running(loop):
                self._forget(key)

    def _forget(self, key: int) -> None:
        self._running.pop(key, None)
        self._counts.pop(key, None)
        self._counted_at.pop(key, None)

    def _count_loop(self, key: int, loop: Any) -> None:
        try:
            self._counts[key] = len(self._all_tasks(loop))
        except Exception:
            self._counts[key] = 0
        self._counted_at[key] = self._calls

    def _py_tasks(self) -> list[Any]:
        # The usual case: no _PyTask anywhere (WeakSet.data: see _weak_refs).
        weak, eager = self._py_weak, self._py_eager
        if not getattr(weak, "data", weak) and not eager:
            return []
        return _registered(weak, eager)

    def count(self) -> int:
        with self._lock:
            self._calls += 1
            if self._discover_in > 0:
                self._discover_in -= 1
            else:
                self._discover()
            self._drop_stopped()
            running = self._running
            fresh = [key for key in running if key not in self._counts]
            if fresh:
                for key in fresh:
                    self._count_loop(key, running[key][0]())
            elif running:
                oldest = min(running, key=self._counted_at.__getitem__)
                self._count_loop(oldest, running[oldest][0]())
            n = sum(self._counts.values())
        py_tasks = self._py_tasks()
        if py_tasks:
            n += _pending_of_running_loops(py_tasks)
        return n

    def tasks(self) -> list[Any]:
        with self._lock:
            self._discover()
            self._drop_stopped()
            known = {key: ref() for key, (ref, _) in self._running.items()}
        for loop in _copy(self._seen):
            known.setdefault(id(loop), loop)
        found: list[Any] = []
        for loop in known.values():
            if loop is None:
                continue
            try:
                found.extend(self._all_tasks(loop))
            except Exception:
                continue
        found.extend(self._py_tasks())
        return found

    def loop_threads(self) -> dict[int, int]:
        with self._lock:
            return {key: tid for key, (_, tid) in self._running.items()}

    def after_fork_in_child(self) -> None:
        """In a forked child: only the thread that forked is left.

        The lock may have been held by a parent thread at the fork, and the
        loops the parent's threads ran still say they run (their thread ids
        are set) though no thread of the child runs them: start afresh.
        Loops seen before stay listed (their tasks are the child's copies).
        """
        self._lock = threading.Lock()
        self._running.clear()
        self._counts.clear()
        self._counted_at.clear()
        self._discover_in = 0


def _weak(obj: Any) -> Callable[[], Any]:
    """A weak reference to `obj`, or (for a class without weakref support) a strong one."""
    try:
        return weakref.ref(obj)
    except TypeError:
        return lambda: obj


_Registry = _WeakSetRegistry | _PerThreadRegistry


def _pick_registry() -> _Registry | None:
    """The registry of this interpreter, or None when it has none holmespy can read."""
    tasks_mod = asyncio.tasks
    native = asyncio.Task is not getattr(tasks_mod, "_PyTask", asyncio.Task)
    if sys.version_info >= (3, 14) and native:
        # Native tasks are in the C module's per-thread lists. Only the C
        # all_tasks(loop) reads them: without it (or without a way to find the
        # loops) say "unsupported" rather than count the Python sets and undercount.
        c_all_tasks = asyncio.all_tasks
        if not isinstance(c_all_tasks, types.BuiltinFunctionType) or _RUN_FOREVER_CODE is None:
            return None
        return _PerThreadRegistry(
            c_all_tasks,
            _as_weakset(getattr(tasks_mod, "_scheduled_tasks", None)),
            _as_set(getattr(tasks_mod, "_eager_tasks", None)),
        )
    # 3.11 - 3.13; or 3.14+ without the C module, where every task is a _PyTask
    # in the Python sets.
    weak = getattr(tasks_mod, "_all_tasks", None)  # 3.7 - 3.11
    if weak is None:
        weak = getattr(tasks_mod, "_scheduled_tasks", None)  # 3.12+
    weak = _as_weakset(weak)
    if weak is None:
        return None
    return _WeakSetRegistry(weak, _as_set(getattr(tasks_mod, "_eager_tasks", None)))


def _as_weakset(obj: Any) -> Any:
    return obj if isinstance(obj, weakref.WeakSet) else None


def _as_set(obj: Any) -> Any:
    return obj if isinstance(obj, set) else None


_REGISTRY: _Registry | None = _pick_registry()
if isinstance(_REGISTRY, _PerThreadRegistry) and hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_REGISTRY.after_fork_in_child)


def tasks_supported() -> bool:
    """True when this Python has a task registry holmespy can read."""
    return _REGISTRY is not None


def registry_name() -> str:
    """Which registry this Python gives holmespy (for docs and event.json), or "none"."""
    return _REGISTRY.name if _REGISTRY is not None else "none"


def all_tasks() -> list[asyncio.Task[Any]]:
    """Every not-done task of every event loop in the process, from any thread.

    Unlike `asyncio.all_tasks()` this needs no running loop and covers every
    loop; tasks of stopped or closed loops that never finished are included
    (they are leaks worth seeing; on 3.14+ only for loops holmespy saw
    running). [] when `tasks_supported()` is False.
    """
    registry = _REGISTRY
    if registry is None:
        return []
    try:
        out: list[asyncio.Task[Any]] = []
        for task in registry.tasks():
            try:
                if not task.done():
                    out.append(task)
            except Exception:
                continue
        return out
    except Exception:
        return []


def count_tasks() -> int:
    """The value of the `task` rule: how many tasks the process has, over all loops.

    Called on every watcher tick, so it is cheap rather than exact where
    exactness costs (see the registry classes): on 3.11 - 3.13 it is the
    number of live Task objects, on 3.14+ the pending tasks of running
    loops. Never raises: 0 when unsupported or on an unexpected error.
    """
    registry = _REGISTRY
    if registry is None:
        return 0
    try:
        return registry.count()
    except Exception:
        return 0


def limitations() -> dict[str, str]:
    """What the task dump and the task rule cannot see on this Python, for `event.json`.

    Keys name the feature; values say what is missing and why. Empty when
    nothing is.
    """
    registry = _REGISTRY
    if registry is None:
        return {
            "tasks": f"no readable asyncio task registry on {sys.implementation.name} "
            f"{sys.version.split()[0]}: the task rule is off and tasks.txt is empty"
        }
    if isinstance(registry, _WeakSetRegistry):
        return {
            "task_count": "Python 3.11-3.13 counts live Task objects (the registry's size):"
            " finished tasks still referenced and pending tasks of stopped loops are included",
        }
    return {
        "tasks_of_unseen_loops": "Python 3.14+ keeps no registry of loops: tasks.txt lists"
        " tasks of loops seen running, not of a loop that never ran while holmespy looked",
    }


# -- loops --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoopInfo:
    """One event loop that owns at least one pending task."""

    loop: asyncio.AbstractEventLoop
    running: bool
    """`loop.is_running()` at the time of the snapshot."""
    closed: bool
    thread_id: int | None
    """`threading.get_ident()` of the thread running the loop; None when not running or unknown."""
    thread_name: str | None
    """That thread's `threading` name; None when not running, unknown to threading, or unknown."""
    task_count: int
    """Pending tasks of this loop in the snapshot."""


def _loop_thread_id(loop: Any) -> int | None:
    """Ident of the thread running `loop`, or None.

    `BaseEventLoop._thread_id` (private; set by run_forever() and reset to None
    when it returns, unchanged from Python 3.4 through 3.15). Loops that do not
    derive from BaseEventLoop may lack it (uvloop keeps its own): then the
    thread found on the stacks (3.14+), else None and the caller shows the
    thread as unknown.
    """
    tid = getattr(loop, "_thread_id", None)
    if isinstance(tid, int):
        return tid
    registry = _REGISTRY
    return registry.loop_threads().get(id(loop)) if registry is not None else None


def running_loops(tasks: Iterable[asyncio.Task[Any]] | None = None) -> list[LoopInfo]:
    """The loops owning at least one pending task, with the thread running each.

    `tasks` defaults to `all_tasks()`; pass a snapshot you already hold to avoid
    taking a second one. Sorted running loops first, then by thread name.
    Never raises ([] on error).
    """
    try:
        snapshot = all_tasks() if tasks is None else tasks
        by_loop: dict[int, tuple[Any, int]] = {}
        for task in snapshot:
            try:
                loop = task.get_loop()
            except Exception:
                continue
            entry = by_loop.get(id(loop))
            by_loop[id(loop)] = (loop, 1 if entry is None else entry[1] + 1)
        names = {t.ident: t.name for t in threading.enumerate()}
        infos: list[LoopInfo] = []
        for loop, count in by_loop.values():
            running = _is_running(loop)
            tid = _loop_thread_id(loop) if running else None
            try:
                closed = bool(loop.is_closed())
            except Exception:
                closed = False
            infos.append(
                LoopInfo(
                    loop=loop,
                    running=running,
                    closed=closed,
                    thread_id=tid,
                    thread_name=names.get(tid) if tid is not None else None,
                    task_count=count,
                )
            )
        infos.sort(key=lambda i: (not i.running, i.thread_name or "\uffff", i.thread_id or 0))
        return infos
    except Exception:
        return []


_unanswered: weakref.WeakKeyDictionary[Any, tuple[float, threading.Event]] = (
    weakref.WeakKeyDictionary()
)
"""Loops that have not yet run a probe callback we sent: (time.monotonic() sent, answered)."""


def probe_loops(
    loops: Sequence[asyncio.AbstractEventLoop],
    timeout: float,
    *,
    clock: Callable[[], float] = time.perf_counter,
    wait: Callable[[threading.Event, float], bool] = threading.Event.wait,
) -> list[float | None]:
    """Ask every loop at once to run a no-op; the delay of each, or None if it did not answer.

    All callbacks are scheduled first and then awaited against one shared
    deadline, so N blocked loops cost `timeout` in total, not N times it.
    A loop that still has not run the callback of an earlier probe is known
    to be blocked: it gets no second callback and is not waited for
    (`unanswered_since` says since when). None also means "not probed": a
    loop that is not running (a callback would only run when it restarts), a
    loop run by the calling thread (it cannot answer while we wait), or a
    closed loop. Never raises.

    `clock` (read by this thread and by the loops' threads) times both the
    delays and the deadline, and `wait(event, seconds)` is how this thread
    waits for an answer: tests pass fakes of both to see the waits asked for
    without depending on how fast the machine is.
    """
    results: list[float | None] = [None] * len(loops)
    waiting: list[tuple[int, float, threading.Event, list[float]]] = []
    me = threading.get_ident()
    for i, loop in enumerate(loops):
        try:
            if not _is_running(loop) or _loop_thread_id(loop) == me:
                continue
            if unanswered_since(loop) is not None:
                continue
            answered = threading.Event()
            box: list[float] = []

            def answer(box: list[float] = box, answered: threading.Event = answered) -> None:
                box.append(clock())
                answered.set()

            sent = clock()
            loop.call_soon_threadsafe(answer)
            waiting.append((i, sent, answered, box))
        except Exception:  # closed between the check and the call, or a foreign loop
            continue
    deadline = clock() + max(0.0, timeout)
    for i, sent, answered, box in waiting:
        wait(answered, max(0.0, deadline - clock()))
        if box:
            results[i] = max(0.0, box[0] - sent)
            continue
        # Its callback stays queued: the loop runs it when it is free again. A loop
        # class that cannot be weakly referenced (TypeError) is simply not remembered.
        with contextlib.suppress(TypeError):
            _unanswered[loops[i]] = (time.monotonic() - (clock() - sent), answered)
    return results


def unanswered_since(loop: asyncio.AbstractEventLoop) -> float | None:
    """time.monotonic() when a probe that `loop` has still not answered was sent, else None."""
    try:
        earlier = _unanswered.get(loop)
    except TypeError:
        return None
    if earlier is None:
        return None
    if earlier[1].is_set():  # it answered since: free again
        _unanswered.pop(loop, None)
        return None
    return earlier[0]


def probe_loop(
    loop: asyncio.AbstractEventLoop,
    timeout: float,
    *,
    clock: Callable[[], float] = time.perf_counter,
    wait: Callable[[threading.Event, float], bool] = threading.Event.wait,
) -> float | None:
    """Seconds `loop` took to run a no-op scheduled from this thread; None if not within `timeout`.

    None means blocked (or not running, closed, or run by the calling thread;
    see `probe_loops`, also for `clock` and `wait`). Never raises and never
    waits longer than `timeout`.
    """
    try:
        return probe_loops([loop], timeout, clock=clock, wait=wait)[0]
    except Exception:
        return None


# -- await chains -------------------------------------------------------------


class ChainFrame(NamedTuple):
    """One link of a task's await chain: where that coroutine is suspended.

    For a coroutine, generator or async generator, `lineno` is its frame's
    current line (the `await` it is parked at). Marker links have
    `filename == ""` and `lineno == 0`: `kind == "task"` says the chain
    continues into an awaited Task, `"future"` ends it at a plain Future,
    `"awaitable"` at an object we cannot see into, `"truncated"` at the depth
    cap or a cycle, `"error"` where reading failed.
    """

    qualname: str
    module: str
    filename: str
    lineno: int
    kind: str

    @property
    def key(self) -> tuple[str, str, int]:
        """What identifies this link when grouping identical chains."""
        return (self.qualname, self.filename, self.lineno)

    def __str__(self) -> str:
        if not self.filename:
            return self.qualname
        return f"{self.qualname} ({self.filename}:{self.lineno})"


_LinkCache = dict[tuple[Any, ...], tuple[Any, ChainFrame]]
"""Links already built during one dump. A frame's link is keyed by (id(code),
f_lasti) (the exact suspension point: cheaper to read than f_lineno) and the
code object is kept in the value and compared by identity, so a reused id never
returns a stale link; a Future marker is keyed by (class, state, kind)."""


def _code_link(
    frame: Any, code: Any, fallback_name: str, kind: str, cache: _LinkCache
) -> ChainFrame:
    if frame is not None:
        code = frame.f_code
        key = (id(code), frame.f_lasti)
        hit = cache.get(key)
        if hit is not None and hit[0] is code:
            return hit[1]
        lineno = frame.f_lineno or 0
        module = frame.f_globals.get("__name__", "")
    else:  # finished, or a C/Cython coroutine without a frame
        lineno = getattr(code, "co_firstlineno", 0)
        module = ""
    qualname = getattr(code, "co_qualname", None) or getattr(code, "co_name", fallback_name)
    filename = getattr(code, "co_filename", "") or "<unknown>"
    link = ChainFrame(str(qualname), str(module), str(filename), int(lineno), kind)
    if frame is not None:
        cache[key] = (code, link)
    return link


def _future_link(fut: Any, kind: str, cache: _LinkCache) -> ChainFrame:
    """A marker naming the future's class and state, without calling its repr()."""
    cls = type(fut)
    try:
        if not fut.done():
            state = "pending"
        elif fut.cancelled():
            state = "cancelled"
        else:
            state = "finished"
    except Exception:
        state = "?"
    key = (cls, state, kind)
    hit = cache.get(key)
    if hit is not None:
        return hit[1]
    name = cls.__name__ if cls.__module__ in ("_asyncio", "asyncio.futures") else cls.__qualname__
    link = ChainFrame(f"<{name} {state}>", str(cls.__module__), "", 0, kind)
    cache[key] = (cls, link)
    return link


_Coroutine = types.CoroutineType
_Generator = types.GeneratorType
_AsyncGenerator = types.AsyncGeneratorType

# C iterator types that wrap the object they step. Their only way in is the
# garbage collector's view of their references (gc.get_referents, read-only;
# layout checked on CPython 3.11 - 3.13):
#   _asyncio.FutureIter      -> the Future (what `await fut` suspends on)
#   async_generator_asend    -> the async generator (`async for` / `anext`)
#   async_generator_athrow   -> the async generator (`aclose` / `athrow`)
#   coroutine_wrapper        -> the coroutine (`coro.__await__()`)
# If a version changes that, the chain ends at an "awaitable" marker instead.
_WRAPPERS = frozenset(
    {"FutureIter", "async_generator_asend", "async_generator_athrow", "coroutine_wrapper"}
)


def _unwrap(obj: Any) -> Any:
    for ref in gc.get_referents(obj):
        if isinstance(ref, _Coroutine | _Generator | _AsyncGenerator) or asyncio.isfuture(ref):
            return ref
    return None


def _fut_waiter(task: Any) -> Any:
    """The Future `task` is blocked on, or None.

    `Task._fut_waiter` (private; present in both the C and Python Task from
    3.4 through 3.14). Used only when the chain ends without naming what it
    waits for (the pure-Python Future's `__await__` generator). Missing: None.
    """
    fut = getattr(task, "_fut_waiter", None)
    return fut if fut is not None and asyncio.isfuture(fut) else None


def await_chain(task: asyncio.Task[Any], *, max_depth: int = MAX_CHAIN_DEPTH) -> list[ChainFrame]:
    """The task's await chain, outermost coroutine first.

    Starts at `task.get_coro()` and follows `cr_await` (coroutines),
    `gi_yieldfrom` (generator-based coroutines) and `ag_await` (async
    generators). An awaited Task adds a `kind="task"` marker and the chain
    continues into that task's coroutine; a plain Future ends it with a
    `kind="future"` marker. At most `max_depth` links. Never raises: a failure
    ends the chain with a `kind="error"` marker.

    Reading `cr_frame` of a suspended coroutine makes CPython (3.11+) create
    the frame object it otherwise creates lazily; it is freed with the
    coroutine, as when `traceback` or `inspect` look at it.
    """
    return _chain(task, max(1, max_depth), {})


def await_chains(
    tasks: Iterable[asyncio.Task[Any]], *, max_depth: int = MAX_CHAIN_DEPTH
) -> list[list[ChainFrame]]:
    """`await_chain` of each task, sharing the links built so far (faster for many tasks).

    Tasks parked at the same `await` share identical `ChainFrame` objects.
    """
    cache: _LinkCache = {}
    depth = max(1, max_depth)
    return [_chain(task, depth, cache) for task in tasks]


def _chain(task: Any, max_depth: int, cache: _LinkCache) -> list[ChainFrame]:
    chain: list[ChainFrame] = []
    try:
        _walk(task, chain, max_depth, cache)
    except Exception as exc:
        chain.append(ChainFrame(f"<chain unreadable: {type(exc).__name__}>", "", "", 0, "error"))
    return chain


def _walk(task: Any, chain: list[ChainFrame], max_depth: int, cache: _LinkCache) -> None:
    # Coroutine and generator stacks cannot form cycles (awaiting a coroutine
    # that is already awaited raises), so only Futures/Tasks go into `seen`:
    # a cycle needs two tasks awaiting each other. The depth cap bounds the rest.
    owner = task  # the Task whose coroutine stack we are walking
    obj: Any = task.get_coro()
    seen: set[int] = {id(task)}
    while True:
        if obj is None:
            # This stack ends here: either the coroutine is running (or about
            # to), or it sits in an await we could not see through.
            if owner is None:
                return
            obj = _fut_waiter(owner)
            owner = None
            if obj is None or id(obj) in seen:
                return
        if len(chain) >= max_depth:
            chain.append(ChainFrame(f"<chain cut at {max_depth} links>", "", "", 0, "truncated"))
            return
        tp = type(obj)
        if tp is _Coroutine:  # the common case, with _code_link's cache lookup inlined
            frame = obj.cr_frame
            if frame is not None:
                code = frame.f_code
                hit = cache.get((id(code), frame.f_lasti))
                if hit is not None and hit[0] is code:
                    chain.append(hit[1])
                else:
                    chain.append(_code_link(frame, code, "<coroutine>", "coroutine", cache))
            else:
                chain.append(_code_link(None, obj.cr_code, "<coroutine>", "coroutine", cache))
            obj = obj.cr_await
        elif tp.__name__ == "FutureIter":
            # `await fut` on a C Future. The Future it wraps is the one the
            # owning task is blocked on (its `_fut_waiter`, ~20x cheaper to
            # read than unwrapping); unwrap only when that is unset.
            wrapper = obj
            obj = _fut_waiter(owner) if owner is not None else None
            if obj is None:
                obj = _unwrap(wrapper)
            owner = None
            if obj is None:
                chain.append(_awaitable_link(wrapper))
                return
        elif isinstance(obj, _Coroutine):
            chain.append(_code_link(obj.cr_frame, obj.cr_code, "<coroutine>", "coroutine", cache))
            obj = obj.cr_await
        elif isinstance(obj, _Generator):
            chain.append(_code_link(obj.gi_frame, obj.gi_code, "<generator>", "generator", cache))
            obj = obj.gi_yieldfrom
        elif isinstance(obj, _AsyncGenerator):
            link = _code_link(obj.ag_frame, obj.ag_code, "<async gen>", "async_generator", cache)
            chain.append(link)
            obj = obj.ag_await
        elif asyncio.isfuture(obj):  # C or pure-Python Future/Task, or a duck-typed one
            if id(obj) in seen:
                chain.append(ChainFrame("<await cycle>", "", "", 0, "truncated"))
                return
            seen.add(id(obj))
            get_coro = getattr(obj, "get_coro", None)  # only Tasks have it
            if not callable(get_coro):
                chain.append(_future_link(obj, "future", cache))
                return
            chain.append(_future_link(obj, "task", cache))
            owner = obj
            obj = get_coro()
        elif tp.__name__ in _WRAPPERS:
            inner = _unwrap(obj)
            if inner is None:
                chain.append(_awaitable_link(obj))
                return
            obj = inner
        elif hasattr(obj, "cr_await"):  # coroutine-like (e.g. Cython): duck-typed
            frame, code = getattr(obj, "cr_frame", None), getattr(obj, "cr_code", None)
            chain.append(_code_link(frame, code, tp.__qualname__, "coroutine", cache))
            obj = obj.cr_await
        else:
            chain.append(_awaitable_link(obj))
            return


def _awaitable_link(obj: Any) -> ChainFrame:
    cls = type(obj)
    return ChainFrame(f"<awaiting {cls.__qualname__}>", cls.__module__, "", 0, "awaitable")


# -- is a loop waiting for events? ---------------------------------------------
#
# A loop with nothing to do sits in its selector's `select()`, called by
# `BaseEventLoop._run_once` (private; the one call of a method named `select`
# it makes, from Python 3.4 through 3.15). Seen from another thread, that is a
# loop that is idle, not stalled: the loop watchdog then needs no heartbeat
# from it and leaves it asleep. A selector's `select` called from anywhere else
# (`subprocess.run()` inside a handler waits in one) is not the loop's own.
# Loops that do not derive from BaseEventLoop (uvloop's) are never seen idle
# this way: the watchdog then falls back to a heartbeat at every check.

_RUN_ONCE_CODE: Any = getattr(
    getattr(getattr(asyncio.base_events, "BaseEventLoop", None), "_run_once", None),
    "__code__",
    None,
)


def waiting_for_events(frame: types.FrameType | None) -> bool:
    """True when `frame` (a loop thread's innermost) is its loop waiting in `select()`."""
    try:
        if frame is None or _RUN_ONCE_CODE is None or frame.f_code.co_name != "select":
            return False
        caller = frame.f_back
        return caller is not None and caller.f_code is _RUN_ONCE_CODE
    except Exception:
        return False
