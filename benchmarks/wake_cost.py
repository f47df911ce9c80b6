"""What one wake-up of the recorder's sampling thread is made of, next to a busy asyncio host.

    python -m benchmarks.wake_cost [--wakes 50] [--period 0.1]

The recorder thread's CPU (`recorder_cost`) is paid per wake-up, ten times a
second. This splits one wake-up, measured on the thread's own CPU clock while
the main thread runs 100 CPU-bound tasks (as in `recorder_cost`):

- an empty wake-up: `time.sleep(period)` and nothing else (the kernel's
  timer, the context switches, taking the GIL back from the busy main thread);
- a tick of the flight recorder and a look of the loop watchdog, right after
  the wake-up, then the same tick repeated at once: the first pays for caches
  the main thread emptied during the sleep, the repeats show what the code
  itself costs.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import threading
import time
from typing import Any

from benchmarks.recorder_cost import busy_task
from holmespy.recorder import Recorder
from holmespy.watchdog import Watchdog

REPEATS = 3


def _measure(wakes: int, period: float, ready: threading.Event, out: dict[str, Any]) -> None:
    recorder = Recorder(30.0, 1 / period)
    dog = Watchdog(0.5)
    ready.wait()
    dog.discover()
    empty: list[float] = []
    first_tick: list[float] = []
    look: list[float] = []
    again: list[float] = []
    for _ in range(wakes):
        began = time.thread_time_ns()
        time.sleep(period)
        empty.append((time.thread_time_ns() - began) / 1e3)
    for _ in range(wakes):
        time.sleep(period)
        frames = sys._current_frames()
        t0 = time.thread_time_ns()
        recorder.tick(time.monotonic(), frames)
        t1 = time.thread_time_ns()
        dog.check(time.monotonic(), frames)
        t2 = time.thread_time_ns()
        for _ in range(REPEATS):
            recorder.tick(time.monotonic(), frames)
        t3 = time.thread_time_ns()
        del frames
        first_tick.append((t1 - t0) / 1e3)
        look.append((t2 - t1) / 1e3)
        again.append((t3 - t2) / 1e3 / REPEATS)
    out.update(
        empty_wake_us=statistics.median(empty),
        first_tick_us=statistics.median(first_tick),
        watchdog_look_us=statistics.median(look),
        repeated_tick_us=statistics.median(again),
        loops_watched=dog.status()["loops"],
    )


async def _host(wakes: int, period: float) -> dict[str, Any]:
    stop = asyncio.Event()
    workers = [asyncio.create_task(busy_task(stop)) for _ in range(100)]
    ready, out = threading.Event(), {}  # type: ignore[var-annotated]
    thread = threading.Thread(target=_measure, args=(wakes, period, ready, out), name="measure")
    thread.start()
    await asyncio.sleep(0.2)  # the tasks are running: the loop has something to be found by
    ready.set()
    while thread.is_alive():
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.gather(*workers)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wakes", type=int, default=50)
    parser.add_argument("--period", type=float, default=0.1)
    args = parser.parse_args()
    r = asyncio.run(_host(args.wakes, args.period))
    print(f"busy asyncio host, medians of {args.wakes} wake-ups every {args.period:g} s:")
    print(f"  empty wake-up (sleep, wake, GIL)      {r['empty_wake_us']:7.1f} µs CPU")
    print(f"  recorder tick, first after the wake   {r['first_tick_us']:7.1f} µs CPU")
    print(f"  watchdog look, right after it         {r['watchdog_look_us']:7.1f} µs CPU")
    print(f"  recorder tick, repeated at once       {r['repeated_tick_us']:7.1f} µs CPU")
    print(f"  (loops watched: {r['loops_watched']})")


if __name__ == "__main__":
    main()
