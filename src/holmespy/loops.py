"""Every asyncio event loop and task in the process, seen from any thread.

This is the ONLY module of holmespy that touches private asyncio (and a few
private interpreter) internals. Each one is named in a comment saying which
Python versions have it and what happens when it is missing; every public
function here degrades to an empty or "unknown" answer instead of raising.

The functions are called from holmespy's own worker thread while the host's
loops keep running in theirs, so they only read: they copy registries before
iterating them, never call `repr()` on host objects, and never wait without a
deadline.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import itertools
import operator
import sys
import threading
import time
import types
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

__all__ = [
    "ChainFrame",
    "LoopInfo",
    "all_tasks",
    "await_chain",
    "await_chains",
    "count_tasks",
    "probe_loop",
    "probe_loops",
    "running_loops",
    "tasks_supported",
]

MAX_CHAIN_DEPTH = 100
"""Longest await chain `await_chain` follows; it also stops a cycle (task A awaits B awaits A)."""

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
# * Python 3.14+: native tasks live in per-thread linked lists inside the C
#   module and can only be listed for a known loop; `_scheduled_tasks` there
#   holds only third-party task classes, so reading it would silently
#   undercount. We report "unsupported" instead (tasks_supported() is False,
#   all_tasks() is [] and count_tasks() is 0).
#
# They are looked up once, at import: asyncio binds them when it is imported
# and never rebinds them, and count_tasks() runs on every watcher tick.


def _find_registries() -> tuple[Any, Any]:
    """(WeakSet of scheduled tasks or None, set of eager tasks or None)."""
    if sys.version_info >= (3, 14):
        return None, None
    tasks_mod = asyncio.tasks
    weak = getattr(tasks_mod, "_all_tasks", None)  # 3.7 - 3.11
    if weak is None:
        weak = getattr(tasks_mod, "_scheduled_tasks", None)  # 3.12 - 3.13
    eager = getattr(tasks_mod, "_eager_tasks", None)  # 3.12 - 3.13
    if not isinstance(weak, weakref.WeakSet):
        weak = None
    if not isinstance(eager, set):
        eager = None
    return weak, eager


_REGISTRIES = _find_registries()


def _registries() -> tuple[Any, Any]:
    return _REGISTRIES


def tasks_supported() -> bool:
    """True when this Python exposes a process-wide task registry we can read."""
    weak, eager = _registries()
    return weak is not None or eager is not None


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


def _snapshot() -> list[Any]:
    """Every registered task object, done or not (strong references, briefly held)."""
    weak, eager = _registries()
    found: list[Any] = []
    if weak is not None:
        found.extend(t for t in map(operator.call, _weak_refs(weak)) if t is not None)
    if eager is not None:
        found.extend(_copy(eager))
    return found


def all_tasks() -> list[asyncio.Task[Any]]:
    """Every not-done task of every event loop in the process, from any thread.

    Unlike `asyncio.all_tasks()` this needs no running loop and covers every
    loop; tasks of stopped or closed loops that never finished are included
    (they are leaks worth seeing). [] when `tasks_supported()` is False.
    """
    try:
        out: list[asyncio.Task[Any]] = []
        for task in _snapshot():
            try:
                if not task.done():
                    out.append(task)
            except Exception:
                continue
        return out
    except Exception:
        return []


_CTask: Any = asyncio.Task  # the C `_asyncio.Task` on CPython; its methods are C descriptors


def count_tasks() -> int:
    """How many tasks are not done and belong to a loop that is running now.

    Called on every watcher tick, so the hot path iterates in C: it maps the
    unbound C methods `Task.done` / `Task.get_loop` over the snapshot (about
    half the cost of a Python loop) and asks each distinct loop once whether
    it runs. Task classes that are not `asyncio.Task` subclasses make
    the C descriptors raise TypeError; we then redo the count with plain
    method calls. Never raises: 0 when unsupported or on an unexpected error.
    """
    try:
        weak, eager = _registries()
        alive: list[Any] = []
        if weak is not None:
            alive = list(filter(None, map(operator.call, _weak_refs(weak))))
        if eager is not None:
            alive.extend(_copy(eager))
        try:
            pending = list(itertools.filterfalse(_CTask.done, alive))
            task_loops = list(map(_CTask.get_loop, pending))
        except TypeError:
            return _count_slow(alive)
        if not task_loops:
            return 0
        first = task_loops[0]
        first_count = task_loops.count(first)
        if first_count == len(task_loops):  # the common case: one loop
            return first_count if _is_running(first) else 0
        per_loop = collections.Counter(map(id, task_loops))
        by_id = {id(lp): lp for lp in task_loops}
        return sum(n for key, n in per_loop.items() if _is_running(by_id[key]))
    except Exception:
        return 0


def _count_slow(alive: Iterable[Any]) -> int:
    running: dict[int, bool] = {}
    n = 0
    for task in alive:
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


def _is_running(loop: Any) -> bool:
    try:
        return bool(loop.is_running())
    except Exception:
        return False


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
    when it returns, unchanged from Python 3.4 through 3.14). Loops that do not
    derive from BaseEventLoop may lack it (uvloop keeps its own): then None,
    and the caller shows the thread as unknown.
    """
    tid = getattr(loop, "_thread_id", None)
    return tid if isinstance(tid, int) else None


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


def probe_loops(loops: Sequence[asyncio.AbstractEventLoop], timeout: float) -> list[float | None]:
    """Ask every loop at once to run a no-op; the delay of each, or None if it did not answer.

    All callbacks are scheduled first and then awaited against one shared
    deadline, so N blocked loops cost `timeout` in total, not N times it.
    None also means "not probed": a loop that is not running (a callback would
    only run when it restarts), a loop run by the calling thread (it cannot
    answer while we wait), or a closed loop. Never raises.
    """
    results: list[float | None] = [None] * len(loops)
    waiting: list[tuple[int, float, threading.Event, list[float]]] = []
    me = threading.get_ident()
    for i, loop in enumerate(loops):
        try:
            if not _is_running(loop) or _loop_thread_id(loop) == me:
                continue
            answered = threading.Event()
            box: list[float] = []

            def answer(box: list[float] = box, answered: threading.Event = answered) -> None:
                box.append(time.perf_counter())
                answered.set()

            sent = time.perf_counter()
            loop.call_soon_threadsafe(answer)
            waiting.append((i, sent, answered, box))
        except Exception:  # closed between the check and the call, or a foreign loop
            continue
    deadline = time.monotonic() + max(0.0, timeout)
    for i, sent, answered, box in waiting:
        answered.wait(max(0.0, deadline - time.monotonic()))
        if box:
            results[i] = max(0.0, box[0] - sent)
    return results


def probe_loop(loop: asyncio.AbstractEventLoop, timeout: float) -> float | None:
    """Seconds `loop` took to run a no-op scheduled from this thread; None if not within `timeout`.

    None means blocked (or not running, closed, or run by the calling thread;
    see `probe_loops`). Never raises and never waits longer than `timeout`.
    """
    try:
        return probe_loops([loop], timeout)[0]
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
