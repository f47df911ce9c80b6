"""Cost of one watcher tick against one raw `/proc/self/stat` read, in the same run.

    python -m benchmarks.tick_cost            (or: make bench)

The two are measured in interleaved blocks (A, B, A, B, ...) so that the
machine's speed changes hit both alike; each block's per-call time is the
median over the block, the figure is the median over blocks, and the ratio is
taken per block pair. Times are this thread's CPU time (`thread_time`), which
preemption by other processes does not inflate.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from holmespy.config import Config
from holmespy.watcher import Watcher


def raw_stat_read() -> None:
    with open("/proc/self/stat", "rb") as f:
        f.read()


def per_call(fn: Callable[[], object], calls: int) -> float:
    """Seconds of this thread's CPU per call, over `calls` calls."""
    start = time.thread_time()
    for _ in range(calls):
        fn()
    return (time.thread_time() - start) / calls


def measure(blocks: int, calls: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as dumps:
        # Default rules, all on; nothing fires (no event is written), as in production.
        watcher = Watcher(Config(dump_path=Path(dumps), service="bench"))
        try:
            for _ in range(11):
                watcher.tick()  # past warm-up: every rule evaluates fully
            raw, tick, ratios = [], [], []
            for _ in range(blocks):
                r = per_call(raw_stat_read, calls)
                t = per_call(watcher.tick, calls)
                raw.append(r)
                tick.append(t)
                ratios.append(t / r)
            assert watcher.status().events == 0
            assert watcher.errors == 0
        finally:
            watcher.stop()
    return {
        "raw_stat_read_us": statistics.median(raw) * 1e6,
        "tick_us": statistics.median(tick) * 1e6,
        "ratio": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "blocks": blocks,
        "calls_per_block": calls,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=30)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    result = measure(args.blocks, args.calls)
    print(f"raw /proc/self/stat read (open+read+close): {result['raw_stat_read_us']:8.2f} µs")
    print(f"one watcher tick (5 default rules):         {result['tick_us']:8.2f} µs")
    print(
        f"tick / raw read: {result['ratio']:.2f}x "
        f"(blocks ranged {result['ratio_min']:.2f}x .. {result['ratio_max']:.2f}x)"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
