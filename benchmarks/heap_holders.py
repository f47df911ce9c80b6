"""What the heap-holders walk costs the host, beside the type census, on a big heap.

    python -m benchmarks.heap_holders [--objects 1000000] [--reps 3] [--json PATH]

The heap holds `--objects` live gc-tracked objects (half small class
instances, half dicts pointing at them, as in `heap_pause`), plus the ints
they hold: the walk reaches about 1.5 objects per tracked one. A host thread
loops `time.sleep(0.0005)` and records the longest gap between its
iterations (its longest pause); each capture runs on another thread, as on
holmespy's worker, and a baseline of the same length with no capture follows
it. Phases alternate (census, walk, census, walk...) so both see the same
machine state; medians over `--reps`.

"own step" is the longest single C call the capture made holding the GIL
(`gc.get_objects()` for both, here): the part of the pause that is the
capture's own, where the gap also holds the machine's scheduling delays.

Extra memory is the peak RSS during the phase (VmHWM, reset before it through
/proc/self/clear_refs) minus RSS before it.

The fork probe measures the way not taken: how long `os.fork()` holds the
host, and how much memory a child that only touches every object (a type
count, as any walk must) copies from its parent (its Private_Dirty).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.heap_pause import GapMeter, build_heap
from holmespy.profilers.heap import census
from holmespy.profilers.holders import holders_snapshot

GOAL_MS = 50.0


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def phase(meter: GapMeter, work: Callable[[], Any]) -> dict[str, Any]:
    gc.collect()  # benchmark setup, not the capture path: each phase starts from a settled heap
    rss_before = _status_kib("VmRSS")
    peak_ok = _reset_peak()
    result, gap, took = meter.phase(work)
    peak = _status_kib("VmHWM") if peak_ok else None
    base = meter.baseline(took)
    return {
        "seconds": round(took, 3),
        "max_gap_ms": round(gap * 1000, 2),
        "baseline_max_gap_ms": round(base * 1000, 2),
        "extra_memory_mib": round((peak - rss_before) / 1024, 1) if peak is not None else None,
        "result": result,
    }


def fork_probe() -> dict[str, Any]:
    """Fork, let the child touch every tracked object, read its copied memory back."""
    read, write = os.pipe()
    began = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the child: no cleanup, no at-exit handlers
        try:
            os.close(read)
            Counter(map(type, gc.get_objects()))
            dirty = 0
            with open("/proc/self/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Private_Dirty:"):
                        dirty = int(line.split()[1])
            os.write(write, str(dirty).encode())
        finally:
            os._exit(0)
    fork_ms = (time.perf_counter() - began) * 1000
    os.close(write)
    with os.fdopen(read) as f:
        dirty_kib = int(f.read() or 0)
    os.waitpid(pid, 0)
    return {
        "fork_ms": round(fork_ms, 1),
        "child_copied_mib": round(dirty_kib / 1024, 1),
        "rss_mib": round(_status_kib("VmRSS") / 1024, 1),
    }


def measure(objects: int, reps: int) -> dict[str, Any]:
    meter = GapMeter()
    meter.start()
    heap = build_heap(objects)
    gc.collect()
    tracked = len(gc.get_objects())
    runs: dict[str, list[dict[str, Any]]] = {"census": [], "holders": []}
    walked: dict[str, Any] = {}
    for _ in range(reps):
        row = phase(meter, census)
        row["longest_step_ms"] = round(row.pop("result").list_seconds * 1000, 1)
        runs["census"].append(row)
        row = phase(meter, holders_snapshot)
        snapshot = row.pop("result")
        row["longest_step_ms"] = round(snapshot.longest_step_seconds * 1000, 1)
        runs["holders"].append(row)
        walked = {
            "objects": snapshot.objects,
            "mib": round(snapshot.bytes / 2**20, 1),
            "roots": snapshot.roots,
            "longest_step_ms": round(snapshot.longest_step_seconds * 1000, 1),
            "top_holder": snapshot.holders[0].label if snapshot.holders else None,
            "error": snapshot.error,
        }
    meter.stopping = True
    probe = fork_probe()
    del heap
    return {
        "objects": objects,
        "gc_tracked": tracked,
        "reps": reps,
        "census": _medians(runs["census"]),
        "holders": _medians(runs["holders"]),
        "runs": runs,
        "walked": walked,
        "fork_probe": probe,
    }


def _medians(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in rows[0]:
        values = [r[key] for r in rows if r[key] is not None]
        out[key] = round(statistics.median(values), 2) if values else None
    out["worst_max_gap_ms"] = max(r["max_gap_ms"] for r in rows)
    return out


def summary(r: dict[str, Any]) -> list[tuple[str, str, str, str, bool | None]]:
    rows: list[tuple[str, str, str, str, bool | None]] = []
    for name, label in (("census", "census()"), ("holders", "holders walk")):
        m = r[name]
        met = m["max_gap_ms"] <= GOAL_MS if name == "holders" else None
        rows.append(
            (
                "heap_holders",
                f"{label}: longest host pause, median of {r['reps']}",
                f"{m['max_gap_ms']:.0f} ms (worst {m['worst_max_gap_ms']:.0f},"
                f" baseline {m['baseline_max_gap_ms']:.0f}, own step {m['longest_step_ms']:.0f});"
                f" took {m['seconds']:.2f} s; +{m['extra_memory_mib']} MiB",
                f"<= {GOAL_MS:.0f} ms" if name == "holders" else "-",
                met,
            )
        )
    p = r["fork_probe"]
    rows.append(
        (
            "heap_holders",
            "fork probe (not used): fork() pause, child's copy",
            f"{p['fork_ms']:.0f} ms, {p['child_copied_mib']} MiB of {p['rss_mib']} MiB RSS",
            "-",
            None,
        )
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="300,000 objects, 2 reps")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    objects, reps = (300_000, 2) if args.quick else (args.objects, args.reps)
    result = measure(objects, reps)
    result["load_average"] = round(os.getloadavg()[0], 1)
    print(
        f"heap: {objects:,} live objects ({result['gc_tracked']:,} gc-tracked in all);"
        f" Python {sys.version.split()[0]}"
    )
    print(
        f"{'phase':<10} {'time':>8} {'max gap':>9} {'worst':>8} {'baseline':>9}"
        f" {'own step':>9} {'extra mem':>10}"
    )
    for name in ("census", "holders"):
        m = result[name]
        print(
            f"{name:<10} {m['seconds']:>7.2f}s {m['max_gap_ms']:>7.1f}ms"
            f" {m['worst_max_gap_ms']:>6.1f}ms {m['baseline_max_gap_ms']:>7.1f}ms"
            f" {m['longest_step_ms']:>7.1f}ms {m['extra_memory_mib']:>7} MiB"
        )
    print(f"load average: {result['load_average']} on {os.cpu_count()} CPUs")
    print(f"walk reached: {result['walked']}")
    print(f"fork probe (the way not taken): {result['fork_probe']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
