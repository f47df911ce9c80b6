"""Heap profile (`heap.pb.gz`) and live-object census (`heap-types.txt`).

Both run on holmespy's capture worker thread inside the host process, so both
report failures in their result instead of raising, bound how long they hold
the GIL in one go, and leave tracemalloc and the collector as they found them.

tracemalloc cannot stay on in production (allocations get 8-33x slower), so
`capture_heap` opens a bounded tracing window when a rule fires and profiles
what the window allocated and kept. `census` counts every live gc-tracked
object by type, which needs no tracing and sees the whole heap, but says
nothing about where the objects were made.
"""

from __future__ import annotations

import functools
import gc
import math
import operator
import os
import sys
import threading
import time
import tracemalloc
import types
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import compress, groupby, repeat
from operator import itemgetter
from types import CodeType, FunctionType, MethodType, ModuleType
from typing import Any

from holmespy.census import BLOB_MIN_BYTES, Census
from holmespy.formats.profile import Frame, Profile, ValueType

__all__ = ["BYTES_PER_BLOCK", "Census", "HeapCapture", "capture_heap", "census"]

_Stack = tuple[tuple[str, int], ...]
"""(filename, line) pairs, innermost first: tracemalloc's own frame format."""
_RawTrace = tuple[int, int, _Stack, int]
"""(domain, size, stack, total_nframe), as `_tracemalloc._get_traces()` makes them."""

BYTES_PER_BLOCK = 56
"""tracemalloc's own memory per traced block (hash entry, trace, bucket share).

Measured on CPython 3.11 x86-64 at 55-59 bytes; distinct tracebacks add more,
so dividing `get_tracemalloc_memory()` by this overestimates the block count,
which errs on the side of a shorter window.
"""

_CHUNK = 8192
"""Items handled per C-level step; each step holds the GIL for ~1-5 ms."""

_CENSUS_CHUNK = 8192
"""Objects typed, sized and counted per step (~3 ms), a cheaper step than sorting stacks."""

_BLOB_TYPES = (str, bytes, bytearray)

_POLL_SECONDS = 0.02

_HOLMESPY_DIR = os.path.dirname(os.path.dirname(__file__)) + os.sep
_TRACEMALLOC_FILE = tracemalloc.__file__

_capture_lock = threading.Lock()


@dataclass(frozen=True)
class HeapCapture:
    profile: Profile | None
    """None when the capture failed; `error` says why."""
    facts: dict[str, Any]
    """For `event.json`: what the window saw, how long it paused the host."""
    error: str | None = None


def capture_heap(
    seconds: float,
    *,
    nframes: int = 5,
    max_blocks: int = 50_000,
    cancel: threading.Event | None = None,
) -> HeapCapture:
    """Trace allocations for `seconds`, then profile the ones still live, by allocation site.

    What it sees: allocations made during the window that are still live at
    its end, grouped by their stack (the innermost `nframes` frames).
    Objects allocated before the window are invisible, as are allocations
    made and freed within it. If the host already traces, its tracing is
    reused as found (its frame count, its traces: never stopped, never
    cleared), so the profile covers everything the host's tracing holds that
    is still live, not only the window; `facts["reused_host_tracing"]` says
    so. Otherwise tracing is started for the window and stopped after the
    snapshot, which frees tracemalloc's memory.

    The one pause of the host is `take_snapshot()`, which holds the GIL
    0.6-1 µs per traced block (the default bound: ~50 ms). `max_blocks`
    bounds it: the window ends early once tracemalloc holds about that many
    blocks, and reused host tracing above it is not snapshotted at all.
    `cancel` ends the window early (shutdown); the profile still covers the
    shortened window.

    Allocations made by holmespy (files under `holmespy/`) or by tracemalloc
    itself (live snapshots) are left out. Never raises.
    """
    facts: dict[str, Any] = {
        "engine": "tracemalloc",
        "window_seconds": seconds,
        "max_blocks": max_blocks,
    }
    if not (isinstance(seconds, int | float) and math.isfinite(seconds) and seconds > 0):
        return HeapCapture(None, facts, f"window must be a positive number of seconds: {seconds!r}")
    if not _capture_lock.acquire(blocking=False):
        # A second window would find tracing on, "reuse" it and be cut off when the first stops it.
        return HeapCapture(None, facts, "another heap capture is already running")
    try:
        return _capture(seconds, nframes, max_blocks, cancel, facts)
    except Exception as exc:
        return HeapCapture(None, facts, f"heap capture failed: {type(exc).__name__}: {exc}")
    finally:
        _capture_lock.release()


def _capture(
    seconds: float,
    nframes: int,
    max_blocks: int,
    cancel: threading.Event | None,
    facts: dict[str, Any],
) -> HeapCapture:
    reused = tracemalloc.is_tracing()
    facts["reused_host_tracing"] = reused
    if reused:
        # Snapshotting a big host trace set would freeze the host for seconds: refuse up front.
        too_many = _too_many_blocks(max_blocks)
        if too_many:
            return HeapCapture(None, facts, too_many)
        facts["nframes"] = tracemalloc.get_traceback_limit()
        facts["sees"] = (
            "allocations made since the host started tracemalloc (or last cleared its traces)"
            " that were still live at the end of the window, by allocation site"
        )
    else:
        tracemalloc.start(nframes)
        facts["nframes"] = nframes
        facts["sees"] = (
            "allocations made during the window that were still live at its end,"
            " by allocation site; objects allocated before the window are not seen"
        )
    started_ns = time.time_ns()
    started = time.monotonic()
    try:
        facts["window_end"] = _wait_window(started + seconds, max_blocks, cancel)
        facts["window_elapsed_seconds"] = round(time.monotonic() - started, 3)
        if not tracemalloc.is_tracing():
            return HeapCapture(
                None, facts, "tracemalloc was stopped by someone else during the window"
            )
        if reused:
            too_many = _too_many_blocks(max_blocks)
            if too_many:
                return HeapCapture(None, facts, too_many)
        facts["tracemalloc_memory_bytes"] = tracemalloc.get_tracemalloc_memory()
        before = time.perf_counter()
        snapshot = tracemalloc.take_snapshot()
        facts["snapshot_seconds"] = round(time.perf_counter() - before, 4)
        duration_ns = time.time_ns() - started_ns
    finally:
        if not reused and tracemalloc.is_tracing():
            tracemalloc.stop()

    before = time.perf_counter()
    raw = _raw_traces(snapshot)
    del snapshot  # `raw` is consumed as it is read; nothing else should keep the blocks listed
    facts["traced_blocks"] = len(raw)
    totals = _aggregate(raw)
    profile = _build_profile(totals, facts, started_ns, duration_ns)
    facts["aggregate_seconds"] = round(time.perf_counter() - before, 4)
    return HeapCapture(profile, facts)


def _estimated_blocks() -> int:
    return tracemalloc.get_tracemalloc_memory() // BYTES_PER_BLOCK


def _too_many_blocks(max_blocks: int) -> str | None:
    estimate = _estimated_blocks()
    if estimate <= max_blocks:
        return None
    return (
        f"the host's tracemalloc holds about {estimate:,} traced blocks, over max_blocks"
        f" ({max_blocks:,}): a snapshot would hold the GIL about {estimate / 1e6:.1f} s,"
        " so none was taken"
    )


def _wait_window(deadline: float, max_blocks: int, cancel: threading.Event | None) -> str:
    """Sleep until `deadline`; return why the window ended."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return "elapsed"
        # Polled rather than slept through: an allocation storm must not grow the snapshot
        # (and its pause) past the bound. get_tracemalloc_memory() is O(1).
        if _estimated_blocks() >= max_blocks:
            return "max_blocks"
        step = min(left, _POLL_SECONDS)
        if cancel is None:
            time.sleep(step)
        elif cancel.wait(step):
            return "cancelled"


def _raw_traces(snapshot: tracemalloc.Snapshot) -> list[_RawTrace]:
    """The snapshot's blocks as tracemalloc's raw tuples, stacks innermost first.

    `Snapshot.traces._traces` is private, but it is the list `_get_traces()`
    returned: reading it skips building a Trace, a Traceback and Frames per
    block, which is what makes `statistics()` take tens of seconds on big
    snapshots. If a Python version changes it, the public API gives the same.
    """
    traces = getattr(snapshot.traces, "_traces", None)
    if isinstance(traces, list) and (not traces or _is_raw_trace(traces[0])):
        return traces
    return _public_raw_traces(snapshot)


def _is_raw_trace(item: object) -> bool:
    return (
        isinstance(item, tuple)
        and len(item) == 4
        and isinstance(item[1], int)
        and isinstance(item[2], tuple)
        and all(isinstance(f, tuple) and len(f) == 2 for f in item[2][:1])
    )


def _public_raw_traces(snapshot: tracemalloc.Snapshot) -> list[_RawTrace]:
    # Public Tracebacks are oldest frame first; profiles want innermost first.
    return [
        (
            trace.domain,
            trace.size,
            tuple((f.filename, f.lineno) for f in reversed(trace.traceback)),
            trace.traceback.total_nframe or len(trace.traceback),
        )
        for trace in snapshot.traces
    ]


_by_stack: Callable[[_RawTrace], _Stack] = itemgetter(2)
_by_size: Callable[[_RawTrace], int] = itemgetter(1)


def _aggregate(raw: list[_RawTrace]) -> dict[_Stack, list[int]]:
    """Blocks and bytes per stack. Empties `raw`, from the end, as it goes.

    Sorting a chunk and summing each run of equal stacks makes a few objects
    per distinct stack instead of two ints per block: when the host traces,
    every object made here is traced too, and a per-block loop ran 20x
    slower. Truncating `raw` chunk by chunk frees the snapshot a chunk at a
    time instead of in one long deallocation, and tracemalloc interns
    stacks, so equal stacks usually compare by identity.
    """
    totals: dict[_Stack, list[int]] = {}
    while raw:
        chunk = raw[-_CHUNK:]
        del raw[-_CHUNK:]
        chunk.sort(key=_by_stack)
        for stack, run in groupby(chunk, _by_stack):
            blocks = list(run)
            total = totals.get(stack)
            if total is None:
                totals[stack] = [len(blocks), sum(map(_by_size, blocks))]
            else:
                total[0] += len(blocks)
                total[1] += sum(map(_by_size, blocks))
        del chunk
        time.sleep(0)  # let host threads waiting for the GIL in before the next chunk
    return totals


def _is_own(stack: _Stack) -> bool:
    return any(
        filename.startswith(_HOLMESPY_DIR) or filename == _TRACEMALLOC_FILE for filename, _ in stack
    )


def _build_profile(
    totals: dict[_Stack, list[int]], facts: dict[str, Any], started_ns: int, duration_ns: int
) -> Profile:
    source = "the host's tracemalloc" if facts["reused_host_tracing"] else "holmespy's tracemalloc"
    profile = Profile(
        sample_types=(ValueType("inuse_objects", "count"), ValueType("inuse_space", "bytes")),
        time_nanos=started_ns,
        duration_nanos=duration_ns,
        # tracemalloc records every allocation: a sampling period of one byte.
        period_type=ValueType("space", "bytes"),
        period=1,
        default_sample_type="inuse_space",
        comments=[
            f"heap profile: {source}, {facts['nframes']} frames per stack,"
            f" window {facts['window_elapsed_seconds']} s (ended: {facts['window_end']})",
            f"sees {facts['sees']}",
            "holmespy's and tracemalloc's own allocations are left out",
        ],
    )
    names = _FrameNames()
    own_blocks = own_bytes = 0
    kept = []
    for stack, (blocks, size) in totals.items():
        if _is_own(stack):
            own_blocks += blocks
            own_bytes += size
        else:
            kept.append((size, blocks, stack))
    kept.sort(key=itemgetter(0, 1), reverse=True)
    for size, blocks, stack in kept:
        profile.add(tuple(names.frame(filename, line) for filename, line in stack), (blocks, size))
    facts["stacks"] = len(kept)
    facts["inuse_objects"] = sum(blocks for _, blocks, _ in kept)
    facts["inuse_bytes"] = sum(size for size, _, _ in kept)
    facts["filtered_blocks"] = own_blocks
    facts["filtered_bytes"] = own_bytes
    return profile


class _FrameNames:
    """Turns tracemalloc's (filename, line) into `module.qualname` frames.

    tracemalloc keeps no function names. The code objects of the module that
    owns the file (found through `__file__` in sys.modules) are already in
    memory, and `co_lines()` says exactly which lines each one executes, so
    the name is exact and costs one walk of that module's namespace, with no
    disk reads or parsing (unlike linecache + ast). Lines no reachable code
    object claims (module-level code, functions nothing references any more)
    are named `module:line`.
    """

    def __init__(self) -> None:
        self._modules: dict[str, tuple[str, dict[str, Any]]] | None = None
        self._lines: dict[str, dict[int, tuple[str, int]]] = {}
        self._frames: dict[tuple[str, int], Frame] = {}

    def frame(self, filename: str, line: int) -> Frame:
        key = (filename, line)
        found = self._frames.get(key)
        if found is None:
            found = self._frames[key] = self._resolve(filename, line)
        return found

    def _resolve(self, filename: str, line: int) -> Frame:
        module = self._module_of(filename)
        if module is None:
            name = os.path.basename(filename) or filename
            return Frame(f"{name}:{line}" if line else name, filename, line)
        lines = self._lines.get(filename)
        if lines is None:
            try:
                lines = _code_lines(module[1], module[0], filename)
            except Exception:
                lines = {}
            self._lines[filename] = lines
        named = lines.get(line)
        if named is None:
            return Frame(f"{module[0]}:{line}", filename, line)
        return Frame(f"{module[0]}.{named[0]}", filename, line, named[1])

    def _module_of(self, filename: str) -> tuple[str, dict[str, Any]] | None:
        if self._modules is None:
            self._modules = _modules_by_file()
        found = self._modules.get(filename)
        if found is None and filename.startswith("<frozen ") and filename.endswith(">"):
            name = filename[len("<frozen ") : -1]
            namespace = _module_dict(sys.modules.get(name))
            if namespace is not None:
                found = (name, namespace)
        return found


_module_dict_of = vars(ModuleType)["__dict__"]
_type_dict_of = vars(type)["__dict__"]


def _module_dict(module: object) -> dict[str, Any] | None:
    # Read through the descriptor, not getattr: a module's __getattr__ (lazy imports) or a
    # proxy object in sys.modules must not run host code from this thread.
    if not issubclass(type(module), ModuleType):
        return None
    namespace = _module_dict_of.__get__(module, ModuleType)
    return namespace if isinstance(namespace, dict) else None


def _modules_by_file() -> dict[str, tuple[str, dict[str, Any]]]:
    found: dict[str, tuple[str, dict[str, Any]]] = {}
    for name, module in list(sys.modules.items()):
        namespace = _module_dict(module)
        filename = namespace.get("__file__") if namespace is not None else None
        if namespace is None or not isinstance(filename, str):
            continue
        if filename not in found or found[filename][0] == "__main__":
            found[filename] = (name, namespace)
    return found


def _code_lines(
    namespace: dict[str, Any], module: str, filename: str
) -> dict[int, tuple[str, int]]:
    """line -> (qualname, first line) for every code object of `module` defined in `filename`."""
    lines: dict[int, tuple[str, int]] = {}
    pending = _functions_in(namespace, module)
    seen: set[int] = set()
    while pending:
        code = pending.pop()
        if id(code) in seen or code.co_filename != filename:
            continue
        seen.add(id(code))
        pending.extend(c for c in code.co_consts if type(c) is CodeType)
        named = (code.co_qualname, code.co_firstlineno)
        for _, _, line in code.co_lines():
            if line is None:
                continue
            # The first line of a nested function, lambda or comprehension is also the line of
            # the enclosing statement that creates it: the enclosing code keeps that line.
            if line != code.co_firstlineno:
                lines[line] = named
            else:
                lines.setdefault(line, named)
    return lines


def _functions_in(namespace: dict[str, Any], module: str) -> list[CodeType]:
    """Code objects reachable from a module's functions, methods and properties."""
    codes: list[CodeType] = []
    pending: list[object] = list(namespace.values())
    seen: set[int] = set()
    while pending:
        obj = pending.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        # Exact type tests only: isinstance() would read __class__, which proxies override.
        if type(obj) is FunctionType:
            codes.append(obj.__code__)
            wrapped = obj.__dict__.get("__wrapped__")
            if wrapped is not None:
                pending.append(wrapped)
        elif type(obj) is MethodType or type(obj) is staticmethod or type(obj) is classmethod:
            pending.append(obj.__func__)
        elif type(obj) is property:
            pending.extend((obj.fget, obj.fset, obj.fdel))
        elif type(obj) is functools.partial or type(obj) is functools.cached_property:
            pending.append(obj.func)
        elif issubclass(type(obj), type):
            members = _type_dict_of.__get__(obj, type)
            if members.get("__module__") == module:
                pending.extend(members.values())
    return codes


def census(previous: Mapping[str, int] | None = None, *, top: int = 50) -> Census:
    """Count live gc-tracked objects by type; `previous` (an earlier `counts`) gives growth.

    One `gc.get_objects()` call lists every tracked object holding the GIL
    (~10-20 ms per million objects); counting then runs in chunks that let
    host threads in between. One call rather than one per generation: in a
    long-running server nearly everything is in the oldest generation, so
    per-generation calls hardly shorten the longest pause, while a collection
    between them moves objects across generations (counted twice or missed).
    Never collects (a full collection stalls 100+ ms per million objects).

    The list keeps every object alive until its chunk is counted, so an
    object the host drops meanwhile is freed (and finalized) here instead;
    counting from the end and truncating as it goes keeps that short.
    Never raises: `error` says what failed.
    """
    started = time.time()
    begun = time.perf_counter()
    counts: dict[str, int] = {}
    sizes: dict[str, int] = {}
    blob_totals: dict[str, tuple[int, int]] = {}
    error = None
    list_seconds = 0.0
    try:
        before = time.perf_counter()
        objects = gc.get_objects()
        list_seconds = time.perf_counter() - before
        by_type: Counter[type] = Counter()
        bytes_by_type: dict[type, int] = {}
        sizers: dict[type, Callable[[object], int] | int] = {}
        blobs: dict[int, object] = {}
        while objects:
            chunk = objects[-_CENSUS_CHUNK:]
            del objects[-_CENSUS_CHUNK:]
            kinds = list(map(type, chunk))
            by_type.update(kinds)
            _add_sizes(chunk, kinds, sizers, bytes_by_type)
            _find_blobs(chunk, blobs)
            del chunk, kinds
            time.sleep(0)  # let host threads waiting for the GIL in between chunks
        del objects
        for kind, count in by_type.items():
            name = _type_name(kind)
            counts[name] = counts.get(name, 0) + count
            sizer = sizers.get(kind)
            size = bytes_by_type.get(kind, 0) + (count * sizer if isinstance(sizer, int) else 0)
            sizes[name] = sizes.get(name, 0) + size
        for blob in blobs.values():
            name = type(blob).__name__
            count, size = blob_totals.get(name, (0, 0))
            blob_totals[name] = (count + 1, size + sys.getsizeof(blob))
        del blobs
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        counts, sizes, blob_totals = {}, {}, {}
    growth = None
    if previous is not None and error is None:
        growth = {}
        for name in counts.keys() | previous.keys():
            change = counts.get(name, 0) - previous.get(name, 0)
            if change:
                growth[name] = change
    try:
        gc_collections = tuple(int(s.get("collections", 0)) for s in gc.get_stats())
    except Exception:
        gc_collections = ()
    return Census(
        pid=os.getpid(),
        time=started,
        counts=counts,
        growth=growth,
        gc_counts=gc.get_count(),
        gc_collections=gc_collections,
        frozen=gc.get_freeze_count(),
        sizes=sizes,
        blobs=blob_totals,
        seconds=time.perf_counter() - begun,
        list_seconds=list_seconds,
        top=top,
        error=error,
    )


_C_METHODS = (
    types.WrapperDescriptorType,
    types.MethodDescriptorType,
    types.BuiltinFunctionType,
    types.BuiltinMethodType,
)


def _sizer(kind: type) -> Callable[[object], int] | int:
    """How to size an object of `kind` without running host code.

    A type whose `__sizeof__` is object's own has one size for all its
    objects (an int, worked out once); one whose `__sizeof__` is C code
    (list, dict, bytearray...) is asked per object; a `__sizeof__` written in
    Python is never called: such objects count their basic size.
    """
    impl: object = None
    try:
        for klass in type.__getattribute__(kind, "__mro__"):
            namespace = type.__dict__["__dict__"].__get__(klass)
            if "__sizeof__" in namespace:
                impl = namespace["__sizeof__"]
                break
        basic = int(type.__getattribute__(kind, "__basicsize__"))
        gc_header = sys.getsizeof(()) - ().__sizeof__()  # what getsizeof adds for tracked objects
    except Exception:
        return 0
    if impl is object.__dict__["__sizeof__"]:
        return basic + gc_header
    if isinstance(impl, _C_METHODS):
        return sys.getsizeof
    return basic + gc_header


def _add_sizes(
    chunk: list[object],
    kinds: list[type],
    sizers: dict[type, Callable[[object], int] | int],
    totals: dict[type, int],
) -> None:
    """Add the shallow bytes of `chunk`'s variable-size objects to `totals`, by type.

    Every loop over objects runs in C (map, compress): only the handful of
    distinct types in a chunk are looped over in Python.
    """
    present = set(kinds)
    for kind in present - sizers.keys():
        sizers[kind] = _sizer(kind)
    variable = frozenset(k for k in present if sizers[k] is sys.getsizeof)
    if not variable:
        return
    mask = list(map(variable.__contains__, kinds))
    var_kinds = list(compress(kinds, mask))
    sizes = list(map(sys.getsizeof, compress(chunk, mask)))
    for kind in variable:
        picked = compress(sizes, map(operator.is_, var_kinds, repeat(kind)))
        totals[kind] = totals.get(kind, 0) + sum(picked)


_BLOB_SET = frozenset(_BLOB_TYPES)
_BLOB_FLOOR = BLOB_MIN_BYTES - 1


def _find_blobs(chunk: list[object], found: dict[int, object]) -> None:
    """Big str/bytes/bytearray the chunk's objects hold: the collector lists none of them.

    Filtered in C: by type, then by length, so the millions of small strings
    (every dict key) never reach a Python loop.
    """
    refs = gc.get_referents(*chunk)
    blobs = list(compress(refs, map(_BLOB_SET.__contains__, map(type, refs))))
    del refs
    for blob in compress(blobs, map(_BLOB_FLOOR.__lt__, map(len, blobs))):
        found[id(blob)] = blob


def _type_name(kind: type) -> str:
    try:
        module = kind.__module__
        qualname = kind.__qualname__
    except Exception:
        return repr(kind)
    if not isinstance(module, str) or module == "builtins":
        return str(qualname)
    return f"{module}.{qualname}"
