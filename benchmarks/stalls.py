"""How well the loop watchdog and the flight recorder see what they are for.

    python -m benchmarks.stalls [--reps 6] [--json PATH]

Measured with holmespy running for real in this process (its own sampling
thread, its own schedule), on event loops in threads of this process:

1. **Detection latency**: a handler blocks its loop for longer than the loop
   rule's `min` (`time.sleep`, or pure-Python work that holds the GIL, on an
   idle loop and on a loop busy with 20 tasks); the time from the moment the
   blocking call began (noted by the handler) to the moment the watchdog saw
   the stall, against `min`, for min = 250, 500 and 1000 ms. The goal is
   `min` + 100 ms. Each rep starts at another phase of the watchdog's 100 ms
   looks.
2. **Evidence**: the share of each stall's samples whose innermost frame is
   the blocking function, and how much longer than the call the stall reads.
3. **The seconds before a trigger**: a 1 s CPU burst in `crunch_numbers` on
   one thread, a background thread doing light work meanwhile and after, then
   2 s of quiet, then a recording as a firing rule would take it; the share
   of `recorder.pb.gz`'s CPU whose innermost frame is `crunch_numbers`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import holmespy
from holmespy import Config, Rule
from holmespy.recorder import recorder_profile

MINS_MS = (250, 500, 1000)
OVER_MIN = 0.4
"""Seconds each stall lasts beyond the rule's min."""
GOAL_LATENCY_OVER_MIN = 0.1
GOAL_SHARE = 0.9

Row = tuple[str, str, str, str, bool | None]


def blocking_sleep(seconds: float) -> None:
    time.sleep(seconds)


def blocking_spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    total = 0
    while time.perf_counter() < end:
        for i in range(200):
            total += i * i


def crunch_numbers(cpu_seconds: float) -> None:
    end = time.thread_time() + cpu_seconds
    total = 0
    while time.thread_time() < end:
        for i in range(2000):
            total += i * i


def background_chatter(stop: threading.Event) -> None:
    """Light steady work: 5 ms of CPU every 100 ms."""
    while not stop.is_set():
        end = time.thread_time() + 0.005
        while time.thread_time() < end:
            sum(range(100))
        stop.wait(0.1)


class Loop:
    """An event loop in its own thread, optionally kept busy by 20 tasks."""

    def __init__(self, busy: bool) -> None:
        self.loop = asyncio.new_event_loop()
        self.busy = busy
        self.thread = threading.Thread(target=self._run, name="bench-loop", daemon=True)
        self.ready = threading.Event()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self.stop = asyncio.Event()
        tasks = [asyncio.create_task(asyncio.sleep(3600))]
        if self.busy:
            tasks += [asyncio.create_task(self._work()) for _ in range(20)]
        self.ready.set()
        await self.stop.wait()
        for task in tasks:
            task.cancel()

    async def _work(self) -> None:
        while True:
            total = 0
            for i in range(300):
                total += i * i
            await asyncio.sleep(0.001)

    def __enter__(self) -> Loop:
        self.thread.start()
        self.ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(10)
        self.loop.close()


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.01)


def one_stall(
    loop: Loop, blocker: Callable[[float], None], seconds: float, phase: float
) -> dict[str, Any]:
    watcher = holmespy.current()
    assert watcher is not None
    stacks = watcher.stacks
    wait_for(lambda: stacks.watchdog is not None)  # made by the sampling thread
    dog = stacks.watchdog
    assert dog is not None
    # This loop watched (found on a watcher tick), and no stall going on.
    wait_for(lambda: any(w.loop() is loop.loop for w in list(dog._watched.values())))
    wait_for(lambda: dog.wait_until_calm(0))
    time.sleep(0.3 + phase)  # settle, then start at another phase of the 100 ms looks
    seen_before = dog.stalls_seen
    began: list[float] = []

    def handler() -> None:
        began.append(time.time())
        blocker(seconds)

    loop.loop.call_soon_threadsafe(handler)
    wait_for(lambda: dog.stalls_seen > seen_before and dog.wait_until_calm(0))
    view = next(v for v in dog.stalls() if v.start_wall <= began[0] + 1e-3)
    seen_at = view.start_wall + view.detected_after
    sampled = sum(n for _, n, _ in view.samples)
    named = sum(
        n
        for stack, n, _ in view.samples
        if stack.frames and stack.frames[0].function.endswith(f".{blocker.__name__}")
    )
    return {
        "latency_s": seen_at - began[0],
        "reads_longer_by_s": view.seconds - seconds,
        "samples": sampled,
        "share_naming_blocker": named / sampled if sampled else 0.0,
    }


def start_holmespy(dump: Path, min_ms: float) -> None:
    holmespy.stop()
    holmespy.start(
        Config(
            service="stalls-bench",
            dump_path=dump,
            interval=1.0,
            cpu=None,
            mem=None,
            thread=None,
            task=None,
            gcheap=None,
            loop=Rule(min=min_ms, diff=100, abs=1_000_000, cooldown=3600),
        )
    )


def detection(dump: Path, reps: int) -> list[dict[str, Any]]:
    rows = []
    for min_ms in MINS_MS:
        start_holmespy(dump, min_ms)
        for busy in (False, True):
            with Loop(busy) as loop:
                for blocker in (blocking_sleep, blocking_spin):
                    runs = [
                        one_stall(loop, blocker, min_ms / 1000 + OVER_MIN, (k * 0.037) % 0.1)
                        for k in range(reps)
                    ]
                    latency = [r["latency_s"] for r in runs]
                    rows.append(
                        {
                            "min_ms": min_ms,
                            "loop": "busy (20 tasks)" if busy else "idle",
                            "blocker": blocker.__name__,
                            "latency_ms_median": 1000 * statistics.median(latency),
                            "latency_ms_max": 1000 * max(latency),
                            "over_min_ms_max": 1000 * max(latency) - min_ms,
                            "reads_longer_ms_max": 1000 * max(r["reads_longer_by_s"] for r in runs),
                            "share_naming_blocker_min": min(
                                r["share_naming_blocker"] for r in runs
                            ),
                            "share_naming_blocker_median": statistics.median(
                                r["share_naming_blocker"] for r in runs
                            ),
                            "samples_median": statistics.median(r["samples"] for r in runs),
                        }
                    )
                    print(json.dumps(rows[-1]), flush=True)
    return rows


def burst(dump: Path) -> dict[str, Any]:
    start_holmespy(dump, 500)
    watcher = holmespy.current()
    assert watcher is not None
    stop = threading.Event()
    chatter = threading.Thread(target=background_chatter, args=(stop,), name="chatter")
    chatter.start()
    try:
        time.sleep(3.0)
        worker = threading.Thread(target=crunch_numbers, args=(1.0,), name="burst-worker")
        worker.start()
        worker.join()
        time.sleep(2.0)
        recording = watcher.stacks.recording(time.time())
        assert recording is not None
        time.sleep(0.5)  # a short capture after the trigger
        ticks = recording.ticks()
    finally:
        stop.set()
        chatter.join()
    profile = recorder_profile(ticks, recording.trigger_wall, recording.recorder.rate)
    cpu = [vt.type for vt in profile.sample_types].index("cpu")
    total = sum(s.values[cpu] for s in profile.samples)
    named = sum(
        s.values[cpu]
        for s in profile.samples
        if s.stack and s.stack[0].function.endswith(".crunch_numbers")
    )
    chatter_cpu = sum(s.values[cpu] for s in profile.samples if s.labels["thread"] == "chatter")
    return {
        "share_naming_burst": named / total if total else 0.0,
        "burst_cpu_s": named / 1e9,
        "window_cpu_s": total / 1e9,
        "chatter_cpu_s": chatter_cpu / 1e9,
        "seconds_before_trigger": recording.trigger_wall - ticks[0].wall,
    }


def measure(reps: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="holmespy-stalls-") as tmp:
        try:
            rows = detection(Path(tmp), reps)
            recorded = burst(Path(tmp))
        finally:
            holmespy.stop()
    return {"detection": rows, "burst": recorded, "reps": reps}


def summary(r: dict[str, Any]) -> list[Row]:
    rows = r["detection"]
    worst_over = max(x["over_min_ms_max"] for x in rows)
    share = min(x["share_naming_blocker_min"] for x in rows)
    typical = statistics.median(x["share_naming_blocker_median"] for x in rows)
    longer = max(x["reads_longer_ms_max"] for x in rows)
    by_min = ", ".join(
        f"{m}: {max(x['latency_ms_max'] for x in rows if x['min_ms'] == m):.0f}" for m in MINS_MS
    )
    b = r["burst"]
    return [
        (
            "stalls",
            "stall seen after it began, worst of every min (ms)",
            f"{by_min} (≤ min + {worst_over:.0f} ms)",
            f"≤ min + {GOAL_LATENCY_OVER_MIN * 1000:.0f} ms",
            worst_over <= GOAL_LATENCY_OVER_MIN * 1000,
        ),
        (
            "stalls",
            "stall samples naming the blocking function, median / worst stall",
            f"{typical:.1%} / {share:.1%} (sleep and GIL-holding spin, idle and busy loops)",
            f"≥ {GOAL_SHARE:.0%} median",
            typical >= GOAL_SHARE,
        ),
        (
            "stalls",
            "stall length read longer than the blocking call (worst)",
            f"{longer:.0f} ms",
            "-",
            None,
        ),
        (
            "stalls",
            "recorder.pb.gz CPU naming a burst over 2 s before the trigger",
            f"{b['share_naming_burst']:.1%} ({b['burst_cpu_s']:.2f} of {b['window_cpu_s']:.2f} s)",
            "-",
            None,
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=6, help="stalls per kind and min")
    parser.add_argument("--quick", action="store_true", help="fewer stalls")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    r = measure(2 if args.quick else args.reps)
    for row in summary(r):
        print(" | ".join(str(c) for c in row[1:4]))
    if args.json:
        args.json.write_text(json.dumps(r, indent=2) + "\n")


if __name__ == "__main__":
    main()
