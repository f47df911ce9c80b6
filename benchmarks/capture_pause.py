"""Longest pause of the host while an instant capture runs: a task dump, a thread dump.

    python -m benchmarks.capture_pause [--tasks 200000] [--threads 3000] [--json PATH]

The host: an asyncio loop on its own thread with `--tasks` pending tasks
(each parked on an Event, as a leaked request handler is) and a ticker task
that records the loop's longest lag between two 1 ms sleeps; beside it a
plain thread sleeping 0.5 ms per iteration records the longest gap between
its iterations (the GIL handed back or not). Each capture runs on a
separate thread, as on holmespy's capture lane; right after it a baseline
period of the same length with no capture is measured in the same run.

Scenarios: `format_tasks()` over `--tasks` tasks; `format_threads()` with
`--threads` extra threads parked in a few nested calls.

The goal (issue 12): the longest host pause of either dump stays under 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.heap_pause import GapMeter
from holmespy.profilers.tasks import format_tasks
from holmespy.profilers.threads import format_threads

GOAL_MS = 50.0


class LoopHost:
    """An event loop on a thread, with a ticker measuring its longest lag."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.max_lag = 0.0
        self.thread = threading.Thread(target=self.loop.run_forever, name="host-loop", daemon=True)
        self.parked: asyncio.Event | None = None

    def __enter__(self) -> LoopHost:
        self.thread.start()
        self.ticker = asyncio.run_coroutine_threadsafe(self._ticker(), self.loop)
        return self

    def __exit__(self, *exc: object) -> None:
        async def wind_down() -> None:
            me = asyncio.current_task()
            others = [t for t in asyncio.all_tasks() if t is not me]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(wind_down(), self.loop).result(120)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        self.loop.close()

    async def _ticker(self) -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            self.max_lag = max(self.max_lag, now - last)
            last = now

    def park(self, tasks: int) -> None:
        async def handler(gate: asyncio.Event) -> None:
            await gate.wait()

        async def spawn() -> None:
            gate = self.parked = asyncio.Event()
            for n in range(tasks):
                asyncio.get_running_loop().create_task(handler(gate), name=f"handler-{n}")
                if n % 5000 == 0:
                    await asyncio.sleep(0)

        asyncio.run_coroutine_threadsafe(spawn(), self.loop).result(300)

    def release(self) -> None:
        gate = self.parked
        if gate is not None:
            self.loop.call_soon_threadsafe(gate.set)


def park_threads(count: int) -> tuple[threading.Event, list[threading.Thread]]:
    gate = threading.Event()

    def outer() -> None:
        middle()

    def middle() -> None:
        gate.wait()

    threads = [
        threading.Thread(target=outer, name=f"parked-{n}", daemon=True) for n in range(count)
    ]
    for thread in threads:
        thread.start()
    return gate, threads


def phase(meter: GapMeter, host: LoopHost, name: str, work: Callable[[], Any]) -> dict[str, Any]:
    time.sleep(0.2)
    meter.max_gap = host.max_lag = 0.0
    started = time.perf_counter()
    box: list[Any] = []
    worker = threading.Thread(target=lambda: box.append(work()), name="capture")
    worker.start()
    worker.join()
    took = time.perf_counter() - started
    gap, lag = meter.max_gap, host.max_lag
    time.sleep(0.05)
    meter.max_gap = host.max_lag = 0.0
    time.sleep(max(took, 0.2))
    base_gap, base_lag = meter.max_gap, host.max_lag
    return {
        "phase": name,
        "seconds": round(took, 3),
        "max_thread_gap_ms": round(gap * 1000, 1),
        "max_loop_lag_ms": round(lag * 1000, 1),
        "baseline_thread_gap_ms": round(base_gap * 1000, 1),
        "baseline_loop_lag_ms": round(base_lag * 1000, 1),
        "output_bytes": len(box[0]) if box else 0,
    }


def measure(tasks: int, threads: int) -> dict[str, Any]:
    meter = GapMeter()
    meter.start()
    rows = []
    with LoopHost() as host:
        host.park(tasks)
        rows.append(phase(meter, host, f"format_tasks(), {tasks:,} tasks", format_tasks))
        host.release()
        gate, parked = park_threads(threads)
        try:
            rows.append(
                phase(meter, host, f"format_threads(), {threads:,} threads", format_threads)
            )
        finally:
            gate.set()
            for thread in parked:
                thread.join(10)
    meter.stopping = True
    return {"tasks": tasks, "threads": threads, "goal_ms": GOAL_MS, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200_000)
    parser.add_argument("--threads", type=int, default=3000)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    result = measure(args.tasks, args.threads)
    print(
        f"{'phase':<34} {'time':>7} {'thread gap':>11} {'loop lag':>9}"
        f" {'base gap':>9} {'base lag':>9}"
    )
    for r in result["rows"]:
        print(
            f"{r['phase']:<34} {r['seconds']:>6.2f}s {r['max_thread_gap_ms']:>9.1f}ms"
            f" {r['max_loop_lag_ms']:>7.1f}ms {r['baseline_thread_gap_ms']:>7.1f}ms"
            f" {r['baseline_loop_lag_ms']:>7.1f}ms"
        )
    print(f"goal: the longest pause of the host under {GOAL_MS:g} ms")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
