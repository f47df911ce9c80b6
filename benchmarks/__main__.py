"""Run every benchmark in one go: `python -m benchmarks [--json results.json] [--plot out.png]`.

Each benchmark prints its own table of ratios against a baseline measured in
the same run; this entry point runs them one after the other (never in
parallel: they would measure each other), gathers their figures, and ends
with one summary table of every figure against its goal. A benchmark that
fails is reported and the others still run; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCHMARKS = (
    "tick_cost",
    "growth",
    "idle_cost",
    "reaction",
    "proxy_capture",
    "capture_cost",
    "heap_pause",
    "heap_holders",
    "recorder_cost",
    "stalls",
)
# Shorter runs for a smoke test; the figures are then rougher.
QUICK_ARGS = {
    "tick_cost": ["--blocks", "10"],
    "capture_cost": ["--reps", "2"],
    "heap_pause": ["--objects", "300000"],
    "heap_holders": ["--quick"],
}
TICK_GOAL = 5.0
FAILED = "(failed)"

Row = tuple[str, str, str, str, bool | None]


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


# Summaries of the benchmarks that predate `summary()` in their own module.


def _tick_cost(r: dict[str, Any]) -> list[Row]:
    return [
        (
            "tick_cost",
            "one watcher tick / one raw /proc/self/stat read (CPU time)",
            f"{r['ratio']:.1f}x ({r['tick_us']:.0f} µs vs {r['raw_stat_read_us']:.0f} µs; "
            f"blocks {r['ratio_min']:.1f}..{r['ratio_max']:.1f}x)",
            f"≤ {TICK_GOAL:g}x",
            r["ratio"] <= TICK_GOAL,
        )
    ]


def _capture_cost(r: dict[str, Any]) -> list[Row]:
    return [
        (
            "capture_cost",
            f"CPU-loop host throughput during a capture / without, {engine}",
            f"{e['throughput_ratio']:.3f} (reps {e['throughput_ratio_range'][0]:.2f}.."
            f"{e['throughput_ratio_range'][1]:.2f}; "
            f"main-thread CPU {e['main_thread_cpu_ratio']:.3f})",
            "-",
            None,
        )
        for engine, e in r.items()
    ]


def _heap_pause(r: dict[str, Any]) -> list[Row]:
    return [
        (
            "heap_pause",
            f"longest host pause: {row['phase'].strip()}",
            f"{row['max_gap_ms']:.0f} ms (baseline {row['baseline_max_gap_ms']:.0f} ms)",
            "-",
            None,
        )
        for row in r["rows"]
    ]


LOCAL_SUMMARIES = {
    "tick_cost": _tick_cost,
    "capture_cost": _capture_cost,
    "heap_pause": _heap_pause,
}


def summary_rows(results: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for name, result in results.items():
        if name.startswith("_"):
            continue
        if "error" in result:
            rows.append((name, FAILED, result["error"][:80], "-", False))
            continue
        summarize = LOCAL_SUMMARIES.get(name)
        if summarize is None:
            summarize = importlib.import_module(f"benchmarks.{name}").summary
        rows.extend(summarize(result))
    return rows


def render(rows: list[Row]) -> str:
    def verdict(measurement: str, met: bool | None) -> str:
        if measurement == FAILED:
            return "FAILED"
        return "" if met is None else ("met" if met else "MISSED")

    table = [("benchmark", "measurement", "result", "goal", "")]
    table += [(b, m, r, g, verdict(m, ok)) for b, m, r, g, ok in rows]
    widths = [max(len(row[i]) for row in table) for i in range(5)]
    lines = []
    for n, row in enumerate(table):
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if n == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--plot", type=Path, help="draw reaction and overhead here (PNG)")
    parser.add_argument("--only", choices=BENCHMARKS, action="append")
    parser.add_argument("--quick", action="store_true", help="shorter runs, rougher figures")
    args = parser.parse_args()
    results: dict[str, Any] = {"_machine": machine()}
    seconds: dict[str, float] = {}
    began = time.monotonic()
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only or BENCHMARKS:
            print(f"\n== {name} ==", flush=True)
            out = Path(tmp) / f"{name}.json"
            extra = []
            if args.quick:
                extra = QUICK_ARGS.get(name, ["--quick"])
            started = time.monotonic()
            proc = subprocess.run(
                [sys.executable, "-m", f"benchmarks.{name}", "--json", str(out), *extra],
                check=False,
            )
            seconds[name] = round(time.monotonic() - started, 1)
            if proc.returncode == 0 and out.exists():
                results[name] = json.loads(out.read_text())
            else:
                failed = True
                results[name] = {"error": f"exit status {proc.returncode}; see its output above"}
    total = time.monotonic() - began
    results["_seconds"] = {**seconds, "total": round(total, 1)}
    print(
        f"\n== summary ({total / 60:.1f} min: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items())
        + ") =="
    )
    print(render(summary_rows(results)))
    m = results["_machine"]
    print(f"{m['nproc']} CPUs ({m['cpu_model']}), Python {m['python']}, {m['date']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"figures written to {args.json}")
    if args.plot:
        from benchmarks.plot import draw

        draw(results, args.plot)
        print(f"plot written to {args.plot}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
