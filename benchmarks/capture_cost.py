"""What a CPU capture costs the host: its throughput during a capture, per engine.

    python -m benchmarks.capture_cost          (or: make bench)

The host is the main thread running a pure-Python CPU loop. Windows with a
capture running (on a background thread, as holmespy's worker does) alternate
with windows without one, in the same run, so the machine's speed changes hit
both alike. Per engine the figure is the median, over repetitions, of
(host iterations during the capture window) / (iterations during the baseline
window just before it), and the same ratio of the main thread's CPU time per
wall second (what the GIL and the other core's load took away).
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from pathlib import Path
from typing import Any

from holmespy.profilers.cpu import capture_cpu

ENGINES = ("pyspy", "sampler", "yappi")


def host_work(seconds: float) -> tuple[int, float]:
    """The host's CPU loop for `seconds`: (iterations, main-thread CPU s per wall s)."""
    iterations = 0
    cpu0, wall0 = time.thread_time(), time.perf_counter()
    deadline = wall0 + seconds
    while time.perf_counter() < deadline:
        total = 0
        for i in range(2000):
            total += i * i
        iterations += 1
    return iterations, (time.thread_time() - cpu0) / (time.perf_counter() - wall0)


def with_capture(engine: str, seconds: float) -> tuple[int, float, dict[str, Any]]:
    result: dict[str, Any] = {}

    def run() -> None:
        capture = capture_cpu(seconds, engine=engine)
        result.update(
            engine=capture.engine, samples=len(capture.profile.samples) if capture.profile else 0
        )

    worker = threading.Thread(target=run, name="holmespy-capture", daemon=True)
    worker.start()
    time.sleep(0.3 if engine == "pyspy" else 0.05)  # let py-spy attach before measuring
    iterations, cpu = host_work(seconds - 0.5)
    worker.join(seconds + 15)
    return iterations, cpu, result


def measure(seconds: float, reps: int, engines: tuple[str, ...]) -> dict[str, Any]:
    ratios: dict[str, list[float]] = {e: [] for e in engines}
    cpu_ratios: dict[str, list[float]] = {e: [] for e in engines}
    ran: dict[str, set[str]] = {e: set() for e in engines}
    host_work(1.0)  # warm up
    for _ in range(reps):
        for engine in engines:
            base_it, base_cpu = host_work(seconds - 0.5)
            cap_it, cap_cpu, info = with_capture(engine, seconds)
            ratios[engine].append(cap_it / base_it)
            cpu_ratios[engine].append(cap_cpu / base_cpu)
            ran[engine].add(str(info.get("engine")))
    return {
        engine: {
            "throughput_ratio": statistics.median(ratios[engine]),
            "throughput_ratio_range": [min(ratios[engine]), max(ratios[engine])],
            "main_thread_cpu_ratio": statistics.median(cpu_ratios[engine]),
            "engine_ran": sorted(ran[engine]),
            "reps": reps,
            "window_seconds": seconds,
        }
        for engine in engines
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.5)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = measure(args.seconds, args.reps, tuple(args.engines.split(",")))
    print(f"{'engine':<9} {'throughput during capture':>26} {'range':>15} {'main-thread CPU':>16}")
    for engine, r in result.items():
        low, high = r["throughput_ratio_range"]
        print(
            f"{engine:<9} {r['throughput_ratio']:>26.3f} {f'{low:.3f}..{high:.3f}':>15} "
            f"{r['main_thread_cpu_ratio']:>16.3f}"
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
