"""Longest pause of a host thread while a heap census or heap profile runs.

    python -m benchmarks.heap_pause [--objects 1000000] [--json PATH]

A host thread loops `time.sleep(0.0005)` and records the longest gap between
its iterations. Each capture runs on a separate thread (as on holmespy's
worker); right after it, a baseline period of the same length with no capture
is measured in the same run, so the ratio compares like with like. The heap
holds `--objects` live gc-tracked objects: half small class instances, half
dicts pointing at them.

Scenarios:
- `census()`, and a naive census (`Counter(map(type, gc.get_objects()))` in
  one C-level pass) for comparison;
- `capture_heap()` opening its own tracing window while a host thread keeps
  allocating live objects (the default `max_blocks` cap ends it early);
- `capture_heap()` reusing host tracing that holds the whole heap: with the
  default cap (refused) and with no cap (the pause the cap prevents).
"""

from __future__ import annotations

import argparse
import gc
import json
import threading
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from holmespy.profilers.heap import capture_heap, census


class Item:
    def __init__(self, n: int) -> None:
        self.n = n
        self.name = "item"


def build_heap(objects: int) -> list[object]:
    heap: list[object] = []
    for n in range(objects // 2):
        item = Item(n)
        heap.append(item)
        heap.append({"item": item})  # holds an object, so the dict is gc-tracked
    return heap


class GapMeter(threading.Thread):
    """The host thread: sleeps 0.5 ms per iteration, records the longest gap per phase."""

    def __init__(self) -> None:
        super().__init__(name="host", daemon=True)
        self.max_gap = 0.0
        self.stopping = False

    def run(self) -> None:
        last = time.perf_counter()
        while not self.stopping:
            time.sleep(0.0005)
            now = time.perf_counter()
            self.max_gap = max(self.max_gap, now - last)
            last = now

    def phase(self, work: Callable[[], Any]) -> tuple[Any, float, float]:
        """Run `work` on another thread; return its result, the longest gap and its time."""
        box: list[Any] = []
        worker = threading.Thread(target=lambda: box.append(work()), name="capture")
        time.sleep(0.05)
        self.max_gap = 0.0
        started = time.perf_counter()
        worker.start()
        worker.join()
        took = time.perf_counter() - started
        return box[0], self.max_gap, took

    def baseline(self, seconds: float) -> float:
        time.sleep(0.05)
        self.max_gap = 0.0
        time.sleep(max(seconds, 0.1))
        return self.max_gap


class Leaker:
    """A host thread that keeps allocating live objects (what a leak looks like)."""

    def __init__(self) -> None:
        self.kept: list[object] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, name="leaker", daemon=True)

    def run(self) -> None:
        while not self.stop.wait(0.001):
            self.kept.extend([{"n": [n]} for n in range(200)])

    def __enter__(self) -> Leaker:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def row(meter: GapMeter, name: str, work: Callable[[], Any]) -> tuple[dict[str, Any], Any]:
    result, gap, took = meter.phase(work)
    base = meter.baseline(took)
    figures = {
        "phase": name,
        "seconds": round(took, 3),
        "max_gap_ms": round(gap * 1000, 2),
        "baseline_max_gap_ms": round(base * 1000, 2),
        "ratio": round(gap / base, 1) if base else None,
    }
    return figures, result


def heap_facts(capture: Any) -> dict[str, Any]:
    keys = ("window_end", "window_elapsed_seconds", "traced_blocks", "snapshot_seconds")
    facts = {k: capture.facts.get(k) for k in keys}
    facts["aggregate_seconds"] = capture.facts.get("aggregate_seconds")
    facts["error"] = capture.error
    return facts


def measure(objects: int, window: float) -> dict[str, Any]:
    meter = GapMeter()
    meter.start()
    rows: list[dict[str, Any]] = []

    heap = build_heap(objects)
    gc.collect()  # benchmark setup, not the capture path: start from a settled heap
    tracked = len(gc.get_objects())

    figures, result = row(meter, "census()", census)
    figures["detail"] = {"objects": result.total, "list_ms": round(result.list_seconds * 1000, 1)}
    rows.append(figures)

    figures, _ = row(
        meter, "naive Counter(gc.get_objects())", lambda: Counter(map(type, gc.get_objects()))
    )
    rows.append(figures)

    with Leaker() as leaker:
        figures, result = row(
            meter, f"capture_heap({window:g}), own window", lambda: capture_heap(window)
        )
        figures["detail"] = heap_facts(result)
        figures["detail"]["leaked_objects"] = len(leaker.kept)
        rows.append(figures)
    del leaker

    del heap, result
    gc.collect()
    tracemalloc.start(5)
    try:
        heap = build_heap(objects)
        figures, result = row(meter, "capture_heap, reused host tracing", lambda: capture_heap(0.2))
        figures["detail"] = heap_facts(result)
        rows.append(figures)
        figures, result = row(
            meter,
            "  same, max_blocks=no limit",
            lambda: capture_heap(0.2, max_blocks=10**12),
        )
        figures["detail"] = heap_facts(result)
        rows.append(figures)
        del heap
    finally:
        tracemalloc.stop()
    meter.stopping = True
    return {"objects": objects, "gc_tracked": tracked, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=1_000_000)
    parser.add_argument("--window", type=float, default=1.0, help="own tracing window, seconds")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    result = measure(args.objects, args.window)
    print(f"heap: {result['objects']:,} live objects ({result['gc_tracked']:,} gc-tracked in all)")
    print(f"{'phase':<36} {'time':>8} {'max gap':>9} {'baseline':>9} {'ratio':>6}")
    for r in result["rows"]:
        ratio = f"{r['ratio']:.1f}x" if r["ratio"] is not None else "-"
        print(
            f"{r['phase']:<36} {r['seconds']:>7.2f}s {r['max_gap_ms']:>7.1f}ms"
            f" {r['baseline_max_gap_ms']:>7.1f}ms {ratio:>6}"
        )
    for r in result["rows"]:
        if "detail" in r:
            print(f"  {r['phase'].strip()}: {r['detail']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
