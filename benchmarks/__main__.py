"""Run every benchmark in one go: `python -m benchmarks [--json results.json] [--plot out.png]`.

Each benchmark prints its own table of ratios against a baseline measured in
the same run; this entry point runs them one after the other (never in
parallel: they would measure each other), gathers their figures, and ends
with one summary table of every figure against its goal.

A benchmark that could not measure (a tool missing, a machine too loaded to
reach the state it measures in) says why in its row and the run goes on with
exit status 0. A benchmark that crashed (a traceback, or still running after
`TIME_LIMIT`) is reported the same way, the others still run, and the exit
status is then 1.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.outcome import NOT_MEASURED as NOT_MEASURED_KEY

BENCHMARKS = (
    "startup",
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
NOT_MEASURED = "(not measured)"
TIME_LIMIT = 20 * 60.0
"""Seconds a benchmark may run before it counts as crashed (the longest takes ~4 min)."""

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
        if NOT_MEASURED_KEY in result:
            rows.append((name, NOT_MEASURED, result[NOT_MEASURED_KEY][:120], "-", False))
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
        if measurement == NOT_MEASURED:
            return "NOT MEASURED"
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


def run_one(name: str, out: Path, extra: list[str]) -> int | None:
    """Run one benchmark in its own process; its exit status, or None when it ran too long."""
    argv = [sys.executable, "-m", f"benchmarks.{name}", "--json", str(out), *extra]
    # Its own process group: a benchmark killed for its time takes its servers with it.
    proc = subprocess.Popen(argv, start_new_session=True)
    try:
        return proc.wait(TIME_LIMIT)
    except subprocess.TimeoutExpired:
        print(f"\n{name} still ran after {TIME_LIMIT / 60:g} min: killed", flush=True)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return None
    except BaseException:  # Ctrl-C: pass it on, as the terminal would have without the session
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        proc.wait()
        raise


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--plot", type=Path, help="draw reaction and overhead here (PNG)")
    parser.add_argument("--only", choices=BENCHMARKS, action="append")
    parser.add_argument("--quick", action="store_true", help="shorter runs, rougher figures")
    args = parser.parse_args()
    results: dict[str, Any] = {"_machine": machine()}
    seconds: dict[str, float] = {}
    # How busy the machine was around each benchmark (1-minute load average,
    # before and after): on a shared machine it says how far to trust a figure.
    load: dict[str, list[float]] = {}
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
            before = os.getloadavg()[0]
            returncode = run_one(name, out, extra)
            seconds[name] = round(time.monotonic() - started, 1)
            load[name] = [round(before, 2), round(os.getloadavg()[0], 2)]
            if returncode == 0 and out.exists():
                results[name] = json.loads(out.read_text())
            else:
                failed = True
                why = "timed out" if returncode is None else f"exit status {returncode}"
                results[name] = {"error": f"{why}; see its output above"}
    total = time.monotonic() - began
    results["_seconds"] = {**seconds, "total": round(total, 1)}
    results["_load"] = load
    print(
        f"\n== summary ({total / 60:.1f} min: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items())
        + ") =="
    )
    print(render(summary_rows(results)))
    m = results["_machine"]
    print(f"{m['nproc']} CPUs ({m['cpu_model']}), Python {m['python']}, {m['date']}")
    if load:
        seen = [x for pair in load.values() for x in pair]
        print(
            f"1-minute load average around the benchmarks: {min(seen):.1f} to {max(seen):.1f} "
            f"on {m['nproc']} CPUs ("
            + ", ".join(f"{k} {a:.1f}->{b:.1f}" for k, (a, b) in load.items())
            + ")"
        )
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
