"""Heap profile (`heap.pb.gz`) and type census (`heap-types.txt`).

`capture_heap` runs on holmespy's capture worker thread while the host keeps
allocating: these tests do the same, with real tracemalloc. A `Window` runs
the capture on a worker thread, and the `with` block is the host's code
running inside the tracing window.
"""

from __future__ import annotations

import gc
import inspect
import json
import os
import re
import sys
import threading
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import holmespy
from holmespy.config import Config
from holmespy.profilers import CaptureContext, capture_type_census
from holmespy.profilers.heap import (
    BLOB_MIN_BYTES,
    Census,
    HeapCapture,
    _public_raw_traces,
    _raw_traces,
    capture_heap,
    census,
)
from holmespy.profilers.threads import format_threads

HOLMESPY_DIR = os.path.dirname(holmespy.__file__) + os.sep


def line_of(fn: Callable[..., Any], text: str) -> int:
    """The line number of the first line of `fn` containing `text`."""
    source, first = inspect.getsourcelines(fn)
    return first + next(i for i, line in enumerate(source) if text in line)


@pytest.fixture(autouse=True)
def tracing_off() -> Iterator[None]:
    if tracemalloc.is_tracing():
        pytest.skip("tracemalloc is on for the whole test run")
    yield
    tracemalloc.stop()


class Window:
    """`capture_heap(seconds)` on a worker thread; the `with` block runs inside its window."""

    def __init__(self, seconds: float = 0.4, **options: Any) -> None:
        self.result: HeapCapture | None = None
        self.worker = threading.Thread(
            target=self._capture, args=(seconds,), kwargs=options, name="capture"
        )

    def _capture(self, seconds: float, **options: Any) -> None:
        self.result = capture_heap(seconds, **options)

    def __enter__(self) -> Window:
        was_tracing = tracemalloc.is_tracing()
        self.worker.start()
        deadline = time.monotonic() + 2
        while not was_tracing and not tracemalloc.is_tracing() and time.monotonic() < deadline:
            time.sleep(0.001)
        return self

    def __exit__(self, *exc: object) -> None:
        self.worker.join(timeout=10)

    @property
    def capture(self) -> HeapCapture:
        assert self.result is not None, "the capture did not finish"
        return self.result


@contextmanager
def in_background(target: Callable[[threading.Event], None]) -> Iterator[None]:
    """Run `target(stop)` on a thread until the block ends."""
    stop = threading.Event()
    thread = threading.Thread(target=target, args=(stop,))
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


SESSIONS: list[bytearray] = []


def leak_sessions(stop: threading.Event) -> None:
    while not stop.is_set():
        SESSIONS.append(bytearray(4096))  # <- the leak
        stop.wait(0.002)


def test_a_steady_leak_holds_the_most_inuse_space_at_its_file_and_line() -> None:
    SESSIONS.clear()
    with Window(0.4) as window, in_background(leak_sessions):
        time.sleep(0.25)
    heap = window.capture

    assert heap.error is None
    assert heap.profile is not None
    assert [(t.type, t.unit) for t in heap.profile.sample_types] == [
        ("inuse_objects", "count"),
        ("inuse_space", "bytes"),
    ]
    assert heap.profile.default_sample_type == "inuse_space"
    top = max(heap.profile.samples, key=lambda s: s.values[1])
    leak = top.stack[0]  # innermost frame first: where the memory was allocated
    assert leak.function == f"{__name__}.leak_sessions"
    assert leak.filename == __file__
    assert leak.line == line_of(leak_sessions, "# <- the leak")
    assert leak.start_line == leak_sessions.__code__.co_firstlineno
    assert top.stack[1].function == "threading.Thread.run"
    # Each session is a bytearray object plus its 4 KiB buffer; the list grows on that line too.
    objects, space = top.values
    sessions = len(SESSIONS)
    assert sessions >= 30
    assert 2 * sessions <= objects <= 2 * sessions + 10
    assert sessions * 4096 <= space <= sessions * 4096 + 20_000
    assert heap.facts["sees"].startswith("allocations made during the window")
    assert 0.35 <= heap.profile.duration_nanos / 1e9 < 2
    SESSIONS.clear()


def churn(kept: list[bytearray]) -> None:
    for _ in range(50):
        scratch = bytearray(1 << 20)  # <- freed at once
        del scratch
    kept.append(bytearray(10_000))  # <- kept


def test_allocations_freed_before_the_window_ends_do_not_count() -> None:
    kept: list[bytearray] = []
    with Window(0.3) as window:
        churn(kept)
    heap = window.capture

    assert heap.profile is not None
    sites = {s.stack[0].line: s.values for s in heap.profile.samples if s.stack[0].line}
    assert line_of(churn, "# <- freed at once") not in sites
    _, kept_space = sites[line_of(churn, "# <- kept")]  # the bytearray, its buffer, the list
    assert 10_000 <= kept_space <= 10_400
    assert heap.facts["inuse_bytes"] < 1 << 20  # 50 MiB passed through


class Cache:
    def fill(self) -> None:
        self.rows = [str(n) * 20 for n in range(200)]


def test_frames_are_named_module_qualname_innermost_first() -> None:
    cache = Cache()
    with Window(0.3, nframes=3) as window:
        cache.fill()
    heap = window.capture

    assert heap.profile is not None
    stacks = [s.stack for s in heap.profile.samples]
    fill_name = f"{__name__}.Cache.fill"
    test_name = f"{__name__}.test_frames_are_named_module_qualname_innermost_first"
    fill = next(st for st in stacks if st[0].function == fill_name)
    assert fill[0].line == line_of(Cache.fill, "self.rows =")
    # Python 3.11 runs the list comprehension in a frame of its own (named after
    # the function its line is in); 3.12+ inline it (PEP 709).
    fill_frames = 2 if sys.version_info < (3, 12) else 1
    names = [frame.function for frame in fill]
    assert names[: fill_frames + 1] == [fill_name] * fill_frames + [test_name]
    assert all(len(st) <= 3 for st in stacks)
    assert heap.facts["nframes"] == 3


def test_tracing_is_off_afterwards_when_it_was_off_before() -> None:
    with Window(0.3) as window:
        assert tracemalloc.is_tracing()
    heap = window.capture

    assert heap.error is None
    assert heap.facts["reused_host_tracing"] is False
    assert not tracemalloc.is_tracing()


def host_allocations() -> list[bytearray]:
    return [bytearray(3000) for _ in range(20)]  # <- before the window


def test_host_tracing_is_reused_and_left_as_found() -> None:
    tracemalloc.start(7)
    held = host_allocations()
    traceback_before = tracemalloc.get_object_traceback(held[0])
    host_snapshot = tracemalloc.take_snapshot()  # alive: tracemalloc's own allocations

    with Window(0.3, nframes=2) as window:
        pass
    heap = window.capture

    assert heap.error is None
    assert heap.facts["reused_host_tracing"] is True
    assert heap.facts["nframes"] == 7  # the host's limit, not the one asked for
    assert tracemalloc.is_tracing()
    assert tracemalloc.get_traceback_limit() == 7
    assert tracemalloc.get_object_traceback(held[0]) == traceback_before
    assert len(host_snapshot.traces) > 0
    # The host's tracing started before the window, so its older allocations are seen too.
    assert heap.profile is not None
    lines = {s.stack[0].line: s.values[0] for s in heap.profile.samples}
    assert lines[line_of(host_allocations, "# <- before the window")] >= 20
    files = {f.filename for s in heap.profile.samples for f in s.stack}
    assert tracemalloc.__file__ not in files


def test_holmespy_own_allocations_are_left_out() -> None:
    kept: list[object] = []
    with Window(0.4) as window:
        kept += [format_threads() for _ in range(5)]
        kept.append(census())
        kept.append(bytearray(5000))
    heap = window.capture

    assert heap.profile is not None
    files = {f.filename for s in heap.profile.samples for f in s.stack}
    assert __file__ in files
    assert not [f for f in files if f.startswith(HOLMESPY_DIR)]
    assert heap.facts["filtered_blocks"] >= 6


def test_the_window_ends_early_when_tracemalloc_holds_max_blocks() -> None:
    kept: list[list[int]] = []
    started = time.monotonic()
    with Window(5, max_blocks=5_000) as window:
        while window.worker.is_alive() and time.monotonic() - started < 4:
            kept += [[n] for n in range(1000)]
            time.sleep(0.001)
    heap = window.capture

    # Ended by the block cap, not by the window's own 5 s: the path, not a timing.
    assert heap.facts["window_end"] == "max_blocks"
    assert heap.facts["traced_blocks"] < 50_000


def test_host_tracing_over_max_blocks_is_not_snapshotted() -> None:
    tracemalloc.start(1)
    held = [[n] for n in range(20_000)]

    heap = capture_heap(0.3, max_blocks=1_000)

    assert heap.profile is None
    assert heap.error is not None
    assert "over max_blocks" in heap.error
    assert tracemalloc.is_tracing()
    assert tracemalloc.get_object_traceback(held[-1]) is not None


def test_cancel_ends_the_window_early() -> None:
    cancel = threading.Event()
    with Window(10, cancel=cancel) as window:
        cancel.set()
    heap = window.capture

    assert heap.facts["window_end"] == "cancelled"
    assert heap.profile is not None
    assert not tracemalloc.is_tracing()


def test_one_capture_at_a_time() -> None:
    with Window(0.3) as window:
        second = capture_heap(0.1)
    assert second.error == "another heap capture is already running"
    assert window.capture.error is None


@pytest.mark.parametrize("seconds", [0, -1, float("nan"), float("inf")])
def test_a_bad_window_is_reported_not_raised(seconds: float) -> None:
    heap = capture_heap(seconds)
    assert heap.profile is None
    assert heap.error is not None
    assert "positive number of seconds" in heap.error
    assert not tracemalloc.is_tracing()


def test_a_failing_snapshot_is_reported_and_tracing_still_stops(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken_snapshot() -> tracemalloc.Snapshot:
        raise MemoryError("no room for the snapshot")

    monkeypatch.setattr(tracemalloc, "take_snapshot", broken_snapshot)
    heap = capture_heap(0.1)

    assert heap.profile is None
    assert heap.error == "heap capture failed: MemoryError: no room for the snapshot"
    assert not tracemalloc.is_tracing()


def test_the_fast_trace_reader_agrees_with_the_public_api() -> None:
    tracemalloc.start(4)
    held = [bytearray(100) for _ in range(100)]
    snapshot = tracemalloc.take_snapshot()
    tracemalloc.stop()
    assert held

    public = _public_raw_traces(snapshot)
    fast = _raw_traces(snapshot)
    assert len(fast) > 100
    assert Counter(fast) == Counter(public)


class Widget:
    pass


WIDGET = f"{__name__}.Widget"


def test_census_counts_live_instances_by_type_and_their_growth() -> None:
    widgets = [Widget() for _ in range(1234)]
    first = census()
    assert first.counts[WIDGET] == 1234
    assert first.growth is None

    widgets += [Widget() for _ in range(100)]
    second = census(first.counts)
    assert second.counts[WIDGET] == 1334
    assert second.growth is not None
    assert second.growth[WIDGET] == +100

    del widgets[:300]
    third = census(second.counts)
    assert third.growth is not None
    assert third.growth[WIDGET] == -300
    assert third.error is None
    assert third.total >= 1034
    assert third.facts["objects"] == third.total


def test_census_text_is_readable() -> None:
    """heap-types.txt starts like this:

    holmespy heap census: pid 4242, at 2026-11-24T04:27:58.690Z, took 0.012 s (gc.get_objects() held the GIL 3 ms)
    objects: 80,123 in 1,204 types; gc counts (375, 5, 4), collections (149, 13, 2), frozen 0
    Counts only gc-tracked objects: class instances and containers; str, int, float, bytes and dicts or tuples holding only those are not tracked.

    top 50 types by count, with growth since the previous census:
           count       growth  type
          21,640           +3  function
           3,000       +3,000  test_heap_profile.Widget
    ...
    top growers since the previous census (4 shown):
          growth        count  type
          +3,000        3,000  test_heap_profile.Widget
    """  # noqa: E501
    before = census()
    widgets = [Widget() for _ in range(3000)]
    text = census(before.counts, top=10).text()
    assert widgets

    lines = text.splitlines()
    assert re.fullmatch(
        r"holmespy heap census: pid \d+, at \d{4}-\d\d-\d\dT[\d:.]+Z, took [\d.]+ s"
        r" \(gc.get_objects\(\) held the GIL \d+ ms\)",
        lines[0],
    )
    assert re.match(r"objects: [\d,]+ in [\d,]+ types; gc counts \(", lines[1])
    assert "top 10 types by count, with growth since the previous census:" in lines
    assert re.search(rf"^\s+3,000\s+\+3,000  {re.escape(WIDGET)}$", text, re.MULTILINE)
    growers = lines[lines.index(next(x for x in lines if x.startswith("top growers"))) + 2]
    assert growers.split() == ["+3,000", "3,000", WIDGET]


def test_a_few_large_bytearrays_rank_at_the_top_by_shallow_bytes() -> None:
    # By count they never show: three objects among hundreds of thousands.
    holder = {"blobs": [bytearray(32 << 20) for _ in range(3)]}
    result = census(top=10)
    text = result.text()

    blob = f"bytearray (>= {BLOB_MIN_BYTES} B, held by tracked objects)"
    assert result.blobs["bytearray"][0] >= 3
    assert result.blobs["bytearray"][1] >= 3 * (32 << 20)
    section = text[text.index("top 10 types by shallow bytes") :].splitlines()
    assert any(row.endswith(f"  {blob}") for row in section[2:5]), section[:6]
    assert blob not in text[: text.index("top 10 types by shallow bytes")]
    read_back = Census.from_json(json.loads(json.dumps(result.to_json())))
    assert read_back.text() == text  # heap-types.json holds every row the text shows
    assert dict(read_back.blobs) == dict(result.blobs)
    assert read_back.counts.get(blob) is None  # the bytes table never feeds the counts
    assert holder


def test_shallow_bytes_never_call_a_hosts_sizeof() -> None:
    calls = []

    class Odd:
        def __sizeof__(self) -> int:
            calls.append(1)
            return 10**12

    odd = [Odd() for _ in range(10)]
    result = census()
    assert calls == []
    assert result.sizes[f"{__name__}.{Odd.__qualname__}"] < 10**6
    assert odd


def test_census_without_previous_has_no_growth_column() -> None:
    text = census(top=5).text()
    assert "(no previous census to compare with)" in text
    assert "growth" not in text


def test_census_failure_is_reported_in_the_text(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_get_objects(generation: int | None = None) -> list[Any]:
        raise RuntimeError("collector unavailable")

    monkeypatch.setattr(gc, "get_objects", broken_get_objects)
    result = census({"dict": 10})

    assert isinstance(result, Census)
    assert result.error == "RuntimeError: collector unavailable"
    assert result.counts == {}
    assert "!! census failed: RuntimeError: collector unavailable" in result.text()
    assert result.facts["error"] == "census failed: RuntimeError: collector unavailable"


def test_the_census_capture_writes_the_text_and_its_json(tmp_path: Path) -> None:
    memory: dict[str, Any] = {}  # what the process keeps between its events
    first, second = tmp_path / "first", tmp_path / "second"
    for folder in (first, second):
        folder.mkdir()
    capture_type_census(CaptureContext(first, "mem", Config(), memory=memory))

    facts = capture_type_census(CaptureContext(second, "mem", Config(), memory=memory))

    assert (facts["file"], facts["data"]) == ("heap-types.txt", "heap-types.json")
    census_read, problems = Census.loads((second / "heap-types.json").read_bytes())
    assert problems == []
    assert census_read.growth is not None  # the second census of the process has growth
    assert census_read.text() == (second / "heap-types.txt").read_text()
