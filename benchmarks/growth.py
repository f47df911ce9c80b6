"""Growth: the cost of one watcher tick as the host grows tasks and threads.

    python -m benchmarks.growth [--json PATH]

Scenarios: an asyncio loop running in its own thread (as a server's would)
with 10, 1,000 and 10,000 pending tasks; then 10 and 500 idle threads. In
each, a Watcher with the default rules ticks past its warm-up, then ticks are
timed against raw /proc/self/stat reads in interleaved blocks (as in
tick_cost), by this thread's CPU time. Counting tasks walks every task, so
when it gets dear the sampler counts only every few ticks (`task_stride`);
the per-tick figure is the average the watcher really pays, and the time of
one count is shown beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks.tick_cost import per_call, raw_stat_read
from holmespy import loops
from holmespy.config import Config
from holmespy.watcher import Watcher

TASKS = (10, 1_000, 10_000)
THREADS = (10, 500)


@contextmanager
def pending_tasks(count: int) -> Iterator[None]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="host-loop", daemon=True)
    thread.start()
    forever = loop.create_future

    async def spawn() -> list[asyncio.Task[None]]:
        async def request() -> None:
            await forever()  # a request waiting on an upstream that never answers

        return [asyncio.create_task(request()) for _ in range(count)]

    tasks = asyncio.run_coroutine_threadsafe(spawn(), loop).result(60)
    try:
        yield
    finally:

        async def cancel() -> None:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(cancel(), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@contextmanager
def idle_threads(count: int) -> Iterator[None]:
    release = threading.Event()
    threads = [
        threading.Thread(target=release.wait, name=f"idle-{n}", daemon=True) for n in range(count)
    ]
    for t in threads:
        t.start()
    try:
        yield
    finally:
        release.set()
        for t in threads:
            t.join(10)


def time_ticks(blocks: int, budget: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as dumps:
        watcher = Watcher(Config(dump_path=Path(dumps), service="bench"))
        try:
            for _ in range(11 * 10):
                watcher.tick()  # past warm-up, and past any stride the sampler chose
            started = time.thread_time()
            watcher.tick()
            # Enough calls per block that strided counting averages out within it.
            calls = max(50, int(budget / max(time.thread_time() - started, 1e-6)))
            raw, tick, ratios = [], [], []
            for _ in range(blocks):
                r = per_call(raw_stat_read, calls)
                t = per_call(watcher.tick, calls)
                raw.append(r)
                tick.append(t)
                ratios.append(t / r)
            sample = watcher.last_sample
            events, stride = watcher.events, watcher.sampler.task_stride
        finally:
            watcher.stop()
    count = statistics.median(per_call(loops.count_tasks, 20) for _ in range(5))
    return {
        "tick_us": statistics.median(tick) * 1e6,
        "raw_stat_read_us": statistics.median(raw) * 1e6,
        "ratio": statistics.median(ratios),
        "task_stride": stride,
        "one_task_count_us": count * 1e6,
        "seen_tasks": loops.count_tasks(),
        "seen_threads": sample.threads if sample else None,
        "events": events,
        "calls_per_block": calls,
    }


def scenario(kind: str, count: int, blocks: int, budget: float) -> dict[str, Any]:
    host = pending_tasks(count) if kind == "tasks" else idle_threads(count)
    with host:
        figures = time_ticks(blocks, budget)
    return {"scenario": f"{count:,} {kind}", kind: count, **figures}


def measure(blocks: int, budget: float) -> dict[str, Any]:
    # One process per scenario: a heap that held 10,000 tasks leaves the next
    # scenario's reads slower, which would be charged to the wrong row.
    rows = []
    for kind, counts in (("tasks", TASKS), ("threads", THREADS)):
        for count in counts:
            out = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.growth",
                    f"--one={kind}:{count}",
                    f"--blocks={blocks}",
                    f"--budget={budget}",
                ],
                check=True,
                capture_output=True,
                text=True,
                timeout=300,
            )
            rows.append(json.loads(out.stdout))
    return {"rows": rows, "blocks": blocks}


def summary(r: dict[str, Any]) -> list[tuple[str, str, str, str, bool | None]]:
    return [
        (
            "growth",
            f"tick with {row['scenario']}",
            f"{row['tick_us']:.0f} µs = {row['ratio']:.1f}x a raw read"
            + (
                f" (tasks counted every {row['task_stride']} ticks, "
                f"{row['one_task_count_us']:.0f} µs a count)"
                if row["task_stride"] > 1
                else ""
            ),
            "-",
            None,
        )
        for row in r["rows"]
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=10)
    parser.add_argument("--budget", type=float, default=0.05, help="CPU seconds per tick block")
    parser.add_argument("--quick", action="store_true", help="5 blocks")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--one", metavar="KIND:N", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # one scenario, in this fresh process, for measure()
        kind, _, count = args.one.partition(":")
        print(json.dumps(scenario(kind, int(count), args.blocks, args.budget)))
        return
    r = measure(5 if args.quick else args.blocks, args.budget)
    print(
        f"{'scenario':<16} {'tick':>9} {'raw read':>9} {'ratio':>7} {'stride':>7} {'one count':>10}"
    )
    for row in r["rows"]:
        print(
            f"{row['scenario']:<16} {row['tick_us']:>7.1f}µs {row['raw_stat_read_us']:>7.1f}µs "
            f"{row['ratio']:>6.1f}x {row['task_stride']:>7} {row['one_task_count_us']:>8.0f}µs"
        )
    if args.json:
        args.json.write_text(json.dumps(r, indent=2) + "\n")


if __name__ == "__main__":
    main()
