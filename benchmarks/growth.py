"""Growth: the cost of one watcher tick as the host grows tasks and threads.

    python -m benchmarks.growth [--json PATH]

Scenarios: an asyncio loop running in its own thread (as a server's would)
with 10, 1,000 and 10,000 pending tasks; 10,500 tasks over three loops in
three threads (10,000 + 400 + 100: on Python 3.14+ each loop's count walks
every task of the process); then 10 and 500 idle threads. In each, a Watcher
with the default rules ticks past its warm-up, then ticks are timed against
raw /proc/self/stat reads in interleaved blocks (as in tick_cost), by this
thread's CPU time. When a count gets dear the sampler counts only every few
ticks (`task_stride`); the per-tick figure is the average the watcher really
pays, and the time of one count is shown beside it.

Then the accuracy of the count under churn (`--one=accuracy:N`): N pending
tasks while batches of short requests are gathered, each finished task held
by its batch until the whole batch is done. From inside the loop's own thread
(so no task changes between the two reads) the task rule's count is compared
with the exact number of pending tasks. On 3.11 - 3.13 the count is the
registry's size and includes the finished tasks still held; on 3.14+ it is
exact (docs/versions.md).

Goals (issue 16): one count at 10,000 tasks <= 0.5 ms; a tick with 10 tasks
<= 2x a raw read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
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
LOOPS = ((10_000, 400, 100),)
THREADS = (10, 500)
ACCURACY_PENDING = 10_000
COUNT_GOAL_US = 500.0
TICK_GOAL = 2.0


class HostLoop:
    """A loop running forever in its own thread, as a server's would."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()
        self.parked: list[asyncio.Task[None]] = []  # a parked task nobody holds is collected

    def park(self, count: int) -> None:
        self.parked.extend(self.run(park(count)))

    def run(self, coro: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        async def cancel() -> None:
            me = asyncio.current_task()
            rest = [t for t in asyncio.all_tasks() if t is not me]
            for task in rest:
                task.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        self.run(cancel())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


async def park(count: int) -> list[asyncio.Task[None]]:
    """`count` requests waiting on an upstream that never answers."""
    loop = asyncio.get_running_loop()

    async def request() -> None:
        await loop.create_future()

    return [asyncio.create_task(request()) for _ in range(count)]


@contextmanager
def pending_tasks(*counts: int) -> Iterator[None]:
    hosts = [HostLoop(f"host-loop-{n}") for n in range(len(counts))]
    try:
        for host, count in zip(hosts, counts, strict=True):
            host.park(count)
        yield
    finally:
        for host in hosts:
            host.close()


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
            events, stride = watcher.status().events, watcher.sampler.task_stride
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


def scenario(kind: str, spec: str, blocks: int, budget: float) -> dict[str, Any]:
    if kind == "loops":  # "10000+400+100": one loop per part, each in its own thread
        counts = [int(n) for n in spec.split("+")]
        with pending_tasks(*counts):
            figures = time_ticks(blocks, budget)
        label = f"{sum(counts):,} tasks over {len(counts)} loops"
        return {"scenario": label, "tasks_over_loops": sum(counts), **figures}
    count = int(spec)
    host = pending_tasks(count) if kind == "tasks" else idle_threads(count)
    with host:
        figures = time_ticks(blocks, budget)
    return {"scenario": f"{count:,} {kind}", kind: count, **figures}


def exact_pending() -> int:
    """Pending tasks of running loops, counted one by one (what the count approximates)."""
    return sum(1 for t in loops.all_tasks() if t.get_loop().is_running())


def accuracy(pending: int, samples: int = 200) -> dict[str, Any]:
    host = HostLoop("host-loop")
    stop = threading.Event()

    async def churn() -> None:
        # Batches of short requests, gathered: a finished request stays
        # referenced by its batch until the slowest of the batch is done.
        while not stop.is_set():
            batch = [asyncio.create_task(asyncio.sleep(0.001 * (i % 10))) for i in range(100)]
            await asyncio.gather(*batch)

    async def read_both() -> tuple[int, int]:
        # Inside the loop's own thread: no task starts or ends between the two reads.
        return loops.count_tasks(), exact_pending()

    try:
        host.park(pending)
        for _ in range(4):
            asyncio.run_coroutine_threadsafe(churn(), host.loop)
        pairs = []
        for _ in range(samples):
            time.sleep(0.005)
            pairs.append(host.run(read_both()))
    finally:
        stop.set()
        host.close()
    over = [100.0 * (counted - exact) / exact for counted, exact in pairs]
    return {
        "scenario": f"accuracy under churn, {pending:,} pending",
        "accuracy": pending,
        "samples": len(pairs),
        "exact_median": statistics.median(exact for _, exact in pairs),
        "counted_median": statistics.median(counted for counted, _ in pairs),
        "overcount_pct_median": statistics.median(over),
        "overcount_pct_max": max(over),
        "undercount_pct_max": max(0.0, -min(over)),
    }


def measure(blocks: int, budget: float) -> dict[str, Any]:
    # One process per scenario: a heap that held 10,000 tasks leaves the next
    # scenario's reads slower, which would be charged to the wrong row.
    rows = []
    specs = [
        *(f"tasks:{n}" for n in TASKS),
        *("loops:" + "+".join(map(str, parts)) for parts in LOOPS),
        *(f"threads:{n}" for n in THREADS),
        f"accuracy:{ACCURACY_PENDING}",
    ]
    for spec in specs:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.growth",
                f"--one={spec}",
                f"--blocks={blocks}",
                f"--budget={budget}",
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=300,
        )
        rows.append(json.loads(out.stdout))
    return {"rows": rows, "blocks": blocks, "python": platform.python_version()}


def summary(r: dict[str, Any]) -> list[tuple[str, str, str, str, bool | None]]:
    out: list[tuple[str, str, str, str, bool | None]] = []
    for row in r["rows"]:
        if "accuracy" in row:
            out.append(
                (
                    "growth",
                    f"task count vs pending tasks, {row['scenario']}",
                    f"+{row['overcount_pct_median']:.2f} % median, +{row['overcount_pct_max']:.2f}"
                    f" % max ({row['samples']} reads)",
                    "-",
                    None,
                )
            )
            continue
        figure = f"{row['tick_us']:.0f} µs = {row['ratio']:.1f}x a raw read" + (
            f" (tasks counted every {row['task_stride']} ticks, "
            f"{row['one_task_count_us']:.0f} µs a count)"
            if row["task_stride"] > 1
            else ""
        )
        goal, ok = "-", None
        if row.get("tasks") == 10:
            goal, ok = f"≤ {TICK_GOAL:g}x", row["ratio"] <= TICK_GOAL
        out.append(("growth", f"tick with {row['scenario']}", figure, goal, ok))
        if row.get("tasks") == 10_000:
            us = row["one_task_count_us"]
            out.append(
                (
                    "growth",
                    "one task count at 10,000 tasks",
                    f"{us:.1f} µs",
                    f"≤ {COUNT_GOAL_US:g} µs",
                    us <= COUNT_GOAL_US,
                )
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=10)
    parser.add_argument("--budget", type=float, default=0.05, help="CPU seconds per tick block")
    parser.add_argument("--quick", action="store_true", help="5 blocks")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--one", metavar="KIND:N", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # one scenario, in this fresh process, for measure()
        kind, _, spec = args.one.partition(":")
        if kind == "accuracy":
            print(json.dumps(accuracy(int(spec))))
        else:
            print(json.dumps(scenario(kind, spec, args.blocks, args.budget)))
        return
    r = measure(5 if args.quick else args.blocks, args.budget)
    print(f"python {r['python']}")
    print(
        f"{'scenario':<30} {'tick':>9} {'raw read':>9} {'ratio':>7} {'stride':>7} {'one count':>10}"
    )
    for row in r["rows"]:
        if "accuracy" in row:
            print(
                f"{row['scenario']}: count - pending = +{row['overcount_pct_median']:.2f} %"
                f" median, +{row['overcount_pct_max']:.2f} % max,"
                f" -{row['undercount_pct_max']:.2f} % at worst ({row['samples']} reads)"
            )
            continue
        print(
            f"{row['scenario']:<30} {row['tick_us']:>7.1f}µs {row['raw_stat_read_us']:>7.1f}µs "
            f"{row['ratio']:>6.1f}x {row['task_stride']:>7} {row['one_task_count_us']:>8.1f}µs"
        )
    if args.json:
        args.json.write_text(json.dumps(r, indent=2) + "\n")


if __name__ == "__main__":
    main()
