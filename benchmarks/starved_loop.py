"""A healthy busy loop on an overloaded machine: does the loop rule blame the loop?

    python -m benchmarks.starved_loop [--seconds 30] [--hogs 3] [--min-ms 200]

A host runs 100 short CPU-bound asyncio tasks (healthy: no callback holds
the loop for more than a millisecond) with holmespy's loop rule at a low
`min`, while `--hogs` other processes spin on the machine's cores, so the
host's thread often waits for a CPU. Every stall the watchdog saw is
printed with the run-queue wait of the loop's thread over the same span,
read independently from `/proc/self/task/<tid>/schedstat` by a thread of
the host, and with what the watchdog took off itself (`cpu wait`). The
goal: no stall, because the loop never held itself up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from benchmarks.recorder_cost import busy_task

HOG = "while True: pass"


def _schedstat(tid: int) -> tuple[float, float]:
    with open(f"/proc/self/task/{tid}/schedstat") as f:
        fields = f.read().split()
    return int(fields[0]) / 1e9, int(fields[1]) / 1e9


async def _run(seconds: float) -> None:
    stop = asyncio.Event()
    workers = [asyncio.create_task(busy_task(stop)) for _ in range(100)]
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.gather(*workers)


def host(seconds: float) -> dict[str, Any]:
    """Run in the host process: the busy loop, the independent schedstat log, the stalls."""
    import holmespy

    holmespy.start()
    tid = threading.get_native_id()
    log: list[tuple[float, float, float]] = []
    done = threading.Event()

    def note() -> None:
        while not done.is_set():
            log.append((time.time(), *_schedstat(tid)))
            time.sleep(0.01)

    noter = threading.Thread(target=note, name="schedstat-log", daemon=True)
    noter.start()
    asyncio.run(_run(seconds))
    done.set()
    noter.join()
    watcher = holmespy.current()
    dog = watcher.watchdog() if watcher is not None else None
    stalls = []
    for view in dog.stalls() if dog is not None else []:
        start, end = view.start_wall, view.start_wall + view.seconds
        span = [p for p in log if start - 0.02 <= p[0] <= end + 0.02]
        waited = span[-1][2] - span[0][2] if len(span) >= 2 else None
        stalls.append(
            {
                "ms": view.seconds * 1000,
                "cpu_wait_ms": view.starved * 1000,
                "run_queue_ms": None if waited is None else waited * 1000,
            }
        )
    state = watcher.states.get("loop") if watcher is not None else None
    values = [v for _, v in state.history] if state is not None else []
    return {"stalls": stalls, "largest_value_ms": max(values, default=0.0)}


def measure(seconds: float, hogs: int, min_ms: int) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOLMES_")}
    with tempfile.TemporaryDirectory(prefix="holmespy-starved-") as tmp:
        env.update(
            HOLMES_DUMP_PATH=tmp,
            HOLMES_INTERVAL="1s",
            HOLMES_CPU="off",
            HOLMES_LOOP=f"min={min_ms},diff=100,abs=100000,cooldown=1h",
        )
        spinners = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(hogs)]
        try:
            out = subprocess.run(
                [sys.executable, "-m", "benchmarks.starved_loop", "--host", str(seconds)],
                env=env,
                capture_output=True,
                text=True,
                timeout=seconds + 120,
                check=True,
            ).stdout
        finally:
            for p in spinners:
                p.kill()
                p.wait()
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--hogs", type=int, default=3, help="spinning processes beside the host")
    parser.add_argument("--min-ms", type=int, default=200, help="the loop rule's min")
    parser.add_argument("--host", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.host is not None:
        print(json.dumps(host(args.host)), flush=True)
        return
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    r = measure(args.seconds, args.hogs, args.min_ms)
    print(
        f"busy healthy loop beside {args.hogs} CPU hogs, {args.seconds:g} s, min={args.min_ms} ms"
        f" (load {load} at the start):"
    )
    for s in r["stalls"]:
        rq = "?" if s["run_queue_ms"] is None else f"{s['run_queue_ms']:.0f}"
        print(
            f"  stall {s['ms']:.0f} ms: run-queue wait over it {rq} ms,"
            f" taken off by the watchdog {s['cpu_wait_ms']:.0f} ms"
        )
    print(f"  stalls: {len(r['stalls'])}; largest loop-rule value {r['largest_value_ms']:.0f} ms")


if __name__ == "__main__":
    main()
