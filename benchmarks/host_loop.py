"""A busy asyncio host for the idle-cost benchmark: run as its own process.

    python -m benchmarks.host_loop [--tasks 100] [--report 5]   (HOLMES_* from the environment)

The main thread runs an event loop whose tasks do pure-Python work and yield
(`await asyncio.sleep(0)`), so it always wants the CPU and never sleeps: any
time it spends neither on a core nor waiting for one, it waited for the GIL.
It calls `holmespy.start()` (a no-op with HOLMES_ENABLE=0), prints one JSON
line with its pid, then every `--report` seconds one JSON line measured by the
main thread itself, at that instant:

- `cpu`: its own CPU time (`thread_time`, exact);
- `wait`: its time spent runnable but waiting for a core (`run_delay` of
  /proc/thread-self/schedstat, exact for a running thread: its current wait
  is zero). Read from outside, both lag by up to a scheduler tick, more
  than the effect measured here;
- `holmespy`: the CPU time of holmespy's threads (their POSIX thread CPU
  clocks, which the kernel brings up to date when read).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import signal
import threading
import time
from typing import Any

import holmespy

HOLMESPY_THREADS = ("holmespy-watcher", "holmespy-capture", "holmespy-window", "holmespy-recorder")


async def handler(stop: asyncio.Event) -> None:
    while not stop.is_set():
        total = 0
        for i in range(500):
            total += i * i
        await asyncio.sleep(0)


def sample(clocks: list[int]) -> dict[str, Any]:
    try:
        with open("/proc/thread-self/schedstat") as f:
            wait = int(f.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        wait = None
    return {
        "wall": time.perf_counter(),
        "cpu": time.thread_time(),
        "wait": wait,
        "holmespy": [time.clock_gettime(c) for c in clocks],
    }


async def report(every: float, clocks: list[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        print(json.dumps(sample(clocks)), flush=True)
        await asyncio.sleep(every)


async def main(tasks: int, every: float) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    by_name = {t.name: t for t in threading.enumerate()}
    # An idle process has only the watcher and the recorder: the lanes start with the first event.
    ours = [by_name[n] for n in HOLMESPY_THREADS if n in by_name]
    clocks = [time.pthread_getcpuclockid(t.ident) for t in ours if t.ident is not None]
    print(json.dumps({"pid": os.getpid(), "holmespy_threads": [t.name for t in ours]}), flush=True)
    workers = [asyncio.create_task(handler(stop)) for _ in range(tasks)]
    reporter = asyncio.create_task(report(every, clocks, stop))
    await asyncio.gather(*workers)
    reporter.cancel()
    status = dataclasses.asdict(holmespy.status())
    print(json.dumps({"status": status}, default=str), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--report", type=float, default=5.0, help="seconds between reports")
    args = parser.parse_args()
    holmespy.start()
    asyncio.run(main(args.tasks, args.report))
