"""Idle cost: what holmespy takes from a busy host when no rule fires (1 s interval).

    python -m benchmarks.idle_cost [--rounds 3] [--window 5] [--json PATH]

Throughput cannot show a cost under 1 % on these machines (cores change speed
for seconds at a time, and neighbours come and go), so what the cost is made
of is measured directly, in three parts:

1. A busy asyncio host (`benchmarks/host_loop.py`: 100 CPU-bound tasks on the
   main thread), with holmespy (default rules) and without it
   (HOLMES_ENABLE=0), run side by side and measured over the same windows.
   Each main thread reports its own clocks: on-CPU time per wall second, and
   on-CPU + run-queue wait per wall second, which is all of its time but the
   GIL waits, whoever else runs on the machine. holmespy's own threads are
   read through their thread CPU clocks.
2. The example proxy (`examples/proxy`) under wrk, with and without holmespy,
   in alternating runs (B A B A ... B), each in a fresh process, each run with
   holmespy compared with the mean of the two without it either side:
   holmespy's threads' on-CPU time (/proc/<pid>/task/<tid>/schedstat, ns),
   the main thread's on-CPU time per wall second, and as the coarse check
   wrk's requests/s and p99 latency.
3. A proxy with holmespy and no traffic, for holmespy's own CPU on an idle host.

Every process is loaded from its first second, so that holmespy's ten warm-up
samples already see the load; a window during which a rule fired anyway (the
capture thread used CPU) is not idle: it is dropped, counted, and replaced.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import outcome
from benchmarks import proxy_rig as rig
from benchmarks.outcome import NotSteady

WARM_TICKS = 11


def run(
    workdir: Path, upstream: rig.Server, label: str, holmes: bool, window: int
) -> dict[str, Any]:
    proxy = rig.start_proxy(
        workdir,
        upstream,
        name=label,
        HOLMES_ENABLE="1" if holmes else "0",
        HOLMES_INTERVAL="1s",
        HOLMES_DUMP_PATH=str(workdir / "dumps"),
    )
    try:
        url = proxy.url("/")
        # Loaded from the start, so warm-up samples see the same load as the
        # window; as long without holmespy, so both runs have the same history.
        rig.finish_wrk(rig.start_wrk(url, WARM_TICKS + 1))
        threads = rig.holmespy_threads(proxy) if holmes else {}
        tids = list(threads.values())
        before = rig.status(proxy)["holmespy"]
        wrk = rig.start_wrk(url, window)
        time.sleep(0.3)  # past wrk's connection set-up
        cpu = rig.CpuWindow(proxy.pid, [proxy.pid, *tids])
        time.sleep(window - 0.6)
        wall, seconds = cpu.close()
        load = rig.finish_wrk(wrk)
        after = rig.status(proxy)["holmespy"]
    finally:
        proxy.stop()
    if holmes and after["ticks"] < WARM_TICKS:
        raise NotSteady(f"{label}: rules not warm ({after['ticks']} ticks)")
    return {
        "holmespy": holmes,
        # The capture thread sleeps on its queue unless a capture runs.
        "captured": _ran(rig.CAPTURE_THREAD, list(threads), seconds[1:]),
        "main_cpu_per_wall": seconds[0] / wall,
        "holmespy_cpu_pct": 100 * sum(seconds[1:]) / wall,
        "ticks_in_window": after["ticks"] - before["ticks"],
        "events": after["events"],
        "rps": load["rps"],
        "p99_ms": load.get("p99_ms"),
        "errors": load["errors"],
        "wall_s": wall,
    }


def _ran(name: str, names: list[str], seconds: list[float]) -> bool:
    """Whether thread `name` used CPU (`seconds` per thread, in the order of `names`)."""
    return name in names and seconds[names.index(name)] > 0


def start_host(
    holmes: bool, workdir: Path, tasks: int, every: float
) -> tuple[subprocess.Popen[str], Any]:
    env = rig.clean_env(
        HOLMES_ENABLE="1" if holmes else "0",
        HOLMES_INTERVAL="1s",
        HOLMES_DUMP_PATH=str(workdir / "dumps-host"),
        HOLMES_SERVICE="host",
    )
    return rig.start_reporting(
        ["benchmarks.host_loop", f"--tasks={tasks}", f"--report={every}"], env
    )


def next_sample(proc: subprocess.Popen[str]) -> dict[str, Any]:
    line = proc.stdout.readline() if proc.stdout else ""
    if not line:
        raise rig.RigError("benchmarks.host_loop stopped reporting")
    sample: dict[str, Any] = json.loads(line)
    return sample


def stop_host(proc: subprocess.Popen[str]) -> Any:
    proc.terminate()
    try:
        out, _ = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        return None
    last = out.strip().splitlines()[-1:] or ["{}"]
    return json.loads(last[0]).get("status")


def host_pair(workdir: Path, windows: int, window: float, tasks: int) -> dict[str, Any]:
    """The busy host with and without holmespy, side by side, measured in the same windows.

    Run at the same time, both see the same machine: the same core-speed
    changes and the same neighbours. Each main thread reports its own clocks
    (see host_loop.py); its on-CPU time plus its run-queue wait is all of
    its time but the GIL waits, whatever the neighbours do.
    """
    a, started = start_host(True, workdir, tasks, window)
    b, _ = start_host(False, workdir, tasks, window)
    rows, excluded = [], 0
    try:
        warm = math.ceil((WARM_TICKS + 1.5) / window)  # loaded from the start: warm-up sees it
        for _ in range(warm):
            next_sample(a), next_sample(b)
        prev_a, prev_b = next_sample(a), next_sample(b)
        # A capture lasts ~6 s and the cpu rule then cools down for a minute:
        # a few windows more than asked for cover one.
        while len(rows) < windows and excluded < windows + 3:
            cur_a, cur_b = next_sample(a), next_sample(b)
            d_a = {k: cur_a[k] - prev_a[k] for k in ("wall", "cpu", "wait")}
            d_b = {k: cur_b[k] - prev_b[k] for k in ("wall", "cpu", "wait")}
            own = [x - y for x, y in zip(cur_a["holmespy"], prev_a["holmespy"], strict=True)]
            prev_a, prev_b = cur_a, cur_b
            if _ran(rig.CAPTURE_THREAD, started["holmespy_threads"], own):
                excluded += 1  # a rule fired: a capture is not idle (proxy_capture measures it)
                continue
            rows.append(
                {
                    "with": d_a,
                    "without": d_b,
                    "main_cpu_with": d_a["cpu"] / d_a["wall"],
                    "main_cpu_without": d_b["cpu"] / d_b["wall"],
                    "main_blocked_with": 1 - (d_a["cpu"] + d_a["wait"]) / d_a["wall"],
                    "main_blocked_without": 1 - (d_b["cpu"] + d_b["wait"]) / d_b["wall"],
                    "holmespy_cpu_pct": 100 * sum(own) / d_a["wall"],
                }
            )
    finally:
        status = stop_host(a)
        stop_host(b)
    if not rows:
        raise NotSteady("every window of the busy host had a capture running")
    on_cpu = [r["main_cpu_with"] / r["main_cpu_without"] for r in rows]
    unblocked = [(1 - r["main_blocked_with"]) / (1 - r["main_blocked_without"]) for r in rows]

    def total(side: str, *keys: str) -> float:
        wall = sum(r[side]["wall"] for r in rows)
        return sum(r[side][k] for r in rows for k in keys) / wall

    return {
        "tasks": tasks,
        "windows": len(rows),
        "window_s": window,
        "main_thread_cpu_ratio": statistics.median(on_cpu),
        "main_thread_cpu_ratio_range": [min(on_cpu), max(on_cpu)],
        # The median, because stalls of a few hundred ms hit one window in
        # twenty or so, in either process; the mean over all windows is kept
        # beside it, since for a long-running server the mean is what it pays.
        "main_thread_unblocked_ratio": statistics.median(unblocked),
        "main_thread_unblocked_ratio_mean": total("with", "cpu", "wait")
        / total("without", "cpu", "wait"),
        "main_thread_unblocked_ratio_range": [min(unblocked), max(unblocked)],
        "main_thread_unblocked_ratio_stderr": (
            statistics.stdev(unblocked) / math.sqrt(len(unblocked)) if len(rows) > 1 else None
        ),
        "main_blocked_pct_with": 100 * (1 - total("with", "cpu", "wait")),
        "main_blocked_pct_without": 100 * (1 - total("without", "cpu", "wait")),
        "holmespy_cpu_pct_of_core": statistics.median(r["holmespy_cpu_pct"] for r in rows),
        "ticks": status.get("ticks") if status else None,
        "events": fired(workdir / "dumps-host"),
        "windows_excluded": excluded,
        "rows": rows,
    }


def fired(dumps: Path) -> list[dict[str, Any]]:
    return [{k: e[k] for k in ("rule", "time", "reason")} for e in rig.events(dumps)]


def idle_host(proxy: rig.Server, tids: list[int], opened: rig.CpuWindow) -> dict[str, float]:
    wall, seconds = opened.close()
    return {
        "holmespy_cpu_pct": 100 * sum(seconds) / wall,
        "seconds": wall,
        "ticks": rig.status(proxy)["holmespy"]["ticks"],
    }


def measure(rounds: int, window: int, host_windows: int, tasks: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="holmespy-idle-") as tmp:
        workdir = Path(tmp)
        host = host_pair(workdir, host_windows, float(window), tasks)
        upstream = rig.start_upstream(workdir)
        quiet = rig.start_proxy(
            workdir,
            upstream,
            name="idle-host",
            HOLMES_INTERVAL="1s",
            HOLMES_DUMP_PATH=str(workdir / "dumps-idle"),
        )
        try:
            time.sleep(0.5)
            quiet_tids = rig.holmespy_tids(quiet)
            quiet_cpu = rig.CpuWindow(quiet.pid, quiet_tids)
            # B A B A ... B: each run with holmespy against the mean of the two
            # runs without it around it.
            without = [run(workdir, upstream, "without-0", False, window)]
            pairs, excluded, n = [], 0, 0
            while len(pairs) < rounds and excluded < rounds + 2:
                n += 1
                with_ = run(workdir, upstream, f"with-{n}", True, window)
                without.append(run(workdir, upstream, f"without-{n}", False, window))
                if with_["captured"]:
                    excluded += 1  # a rule fired during the window: not idle; run another round
                    continue
                pairs.append((with_, rig.between(without[-2], without[-1])))
            if not pairs:
                raise NotSteady("every proxy run had a capture running")
            idle = idle_host(quiet, quiet_tids, quiet_cpu)
            events = fired(workdir / "dumps")
        finally:
            quiet.stop()
            upstream.stop()

    def ratios(key: str) -> list[float]:
        return [a[key] / b[key] for a, b in pairs if a.get(key) and b.get(key)]

    def med(key: str, side: int) -> float:
        return statistics.median(pair[side][key] for pair in pairs)

    main_ratio, rps_ratio, p99_ratio = ratios("main_cpu_per_wall"), ratios("rps"), ratios("p99_ms")
    own = [a["holmespy_cpu_pct"] for a, _ in pairs]
    proxy = {
        "rounds": rounds,
        "window_s": window,
        "holmespy_cpu_pct_of_core": statistics.median(own),
        "holmespy_cpu_pct_range": [min(own), max(own)],
        "main_thread_cpu_ratio": statistics.median(main_ratio),
        "main_thread_cpu_ratio_range": [min(main_ratio), max(main_ratio)],
        "throughput_ratio": statistics.median(rps_ratio),
        "throughput_ratio_range": [min(rps_ratio), max(rps_ratio)],
        "p99_ratio": statistics.median(p99_ratio),
        "p99_ratio_range": [min(p99_ratio), max(p99_ratio)],
        "rps_with": med("rps", 0),
        "rps_without": med("rps", 1),
        "p99_ms_with": med("p99_ms", 0),
        "p99_ms_without": med("p99_ms", 1),
        "main_cpu_with": med("main_cpu_per_wall", 0),
        "main_cpu_without": med("main_cpu_per_wall", 1),
        "events": events,
        "rounds_excluded": excluded,
        "pairs": [{"with": a, "without": b} for a, b in pairs],
    }
    return {
        "interval_s": 1.0,
        "cpu_clock": rig.cpu_clock_source(),
        "host": host,
        "proxy": proxy,
        "idle_proxy": idle,
    }


GOAL_OWN_PCT = 0.2
GOAL_MAIN_RATIO = 0.999
Row = tuple[str, str, str, str, bool | None]


def summary(r: dict[str, Any]) -> list[Row]:
    host, proxy, idle = r["host"], r["proxy"], r["idle_proxy"]
    low, high = host["main_thread_cpu_ratio_range"]
    ulow, uhigh = host["main_thread_unblocked_ratio_range"]
    tlow, thigh = proxy["throughput_ratio_range"]
    plow, phigh = proxy["p99_ratio_range"]
    return [
        (
            "idle_cost",
            "holmespy's threads, CPU-bound asyncio host",
            f"{host['holmespy_cpu_pct_of_core']:.3f} % of a core",
            f"≤ {GOAL_OWN_PCT} %",
            host["holmespy_cpu_pct_of_core"] <= GOAL_OWN_PCT,
        ),
        (
            "idle_cost",
            "holmespy's threads, proxy under wrk",
            f"{proxy['holmespy_cpu_pct_of_core']:.3f} % of a core",
            f"≤ {GOAL_OWN_PCT} %",
            proxy["holmespy_cpu_pct_of_core"] <= GOAL_OWN_PCT,
        ),
        (
            "idle_cost",
            "holmespy's threads, idle proxy",
            f"{idle['holmespy_cpu_pct']:.3f} % of a core",
            f"≤ {GOAL_OWN_PCT} %",
            idle["holmespy_cpu_pct"] <= GOAL_OWN_PCT,
        ),
        (
            "idle_cost",
            "busy host main-thread on-CPU per wall s, with / without",
            f"{host['main_thread_cpu_ratio']:.4f} (windows {low:.3f}..{high:.3f}: neighbours)",
            "-",
            None,
        ),
        (
            "idle_cost",
            "  same, on-CPU + run-queue wait (all but GIL waits)",
            f"{host['main_thread_unblocked_ratio']:.4f} (mean "
            f"{host['main_thread_unblocked_ratio_mean']:.4f}; windows {ulow:.4f}..{uhigh:.4f})",
            f"≥ {GOAL_MAIN_RATIO}",
            host["main_thread_unblocked_ratio"] >= GOAL_MAIN_RATIO,
        ),
        (
            "idle_cost",
            "proxy main-thread on-CPU per wall s, with / without (coarse)",
            f"{proxy['main_thread_cpu_ratio']:.3f}",
            "-",
            None,
        ),
        (
            "idle_cost",
            "proxy wrk requests/s, with / without (coarse)",
            f"{proxy['throughput_ratio']:.3f} (rounds {tlow:.2f}..{thigh:.2f}; "
            f"{proxy['rps_with']:,.0f} vs {proxy['rps_without']:,.0f})",
            "-",
            None,
        ),
        (
            "idle_cost",
            "proxy wrk p99 latency, with / without (coarse)",
            f"{proxy['p99_ratio']:.3f} (rounds {plow:.2f}..{phigh:.2f}; "
            f"{proxy['p99_ms_with']:.2f} vs {proxy['p99_ms_without']:.2f} ms)",
            "-",
            None,
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="proxy rounds (with + without)")
    parser.add_argument("--window", type=int, default=5, help="seconds per measurement")
    parser.add_argument("--host-windows", type=int, default=8)
    parser.add_argument("--tasks", type=int, default=100, help="tasks of the busy host")
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.window, args.host_windows = 2, 3, 3
    try:
        r = measure(args.rounds, args.window, args.host_windows, args.tasks)
    except outcome.NotMeasured as exc:
        outcome.report(args.json, exc)
        return
    host, proxy, idle = r["host"], r["proxy"], r["idle_proxy"]
    print(f"interval 1 s, default rules; CPU clock {r['cpu_clock']}")
    print(
        f"busy asyncio host ({host['tasks']} CPU-bound tasks), with and without holmespy side "
        f"by side, {host['windows']} windows of {host['window_s']:g} s:"
    )
    print(f"{'':<46} {'with':>10} {'without':>10} {'ratio':>9}")
    rows = host["rows"]
    print(
        f"{'  main thread on-CPU s per wall s':<46} "
        f"{statistics.median(x['main_cpu_with'] for x in rows):>10.4f} "
        f"{statistics.median(x['main_cpu_without'] for x in rows):>10.4f} "
        f"{host['main_thread_cpu_ratio']:>9.5f}"
    )
    print(
        f"{'  main thread blocked (GIL), % of wall, mean':<46} "
        f"{host['main_blocked_pct_with']:>10.4f} {host['main_blocked_pct_without']:>10.4f} "
        f"{host['main_thread_unblocked_ratio_mean']:>9.5f}"
    )
    low, high = host["main_thread_unblocked_ratio_range"]
    print(
        f"  not blocked, with / without, median over windows: "
        f"{host['main_thread_unblocked_ratio']:.5f} (windows {low:.5f}..{high:.5f})"
    )
    for n, x in enumerate(rows):
        print(
            f"    window {n}: on-CPU {x['main_cpu_with']:.4f} / {x['main_cpu_without']:.4f}, "
            f"blocked {100 * x['main_blocked_with']:.3f} % / "
            f"{100 * x['main_blocked_without']:.3f} %, holmespy {x['holmespy_cpu_pct']:.4f} %"
        )
    print(
        f"  holmespy's threads: {host['holmespy_cpu_pct_of_core']:.4f} % of one core; "
        f"{host['ticks']} ticks; windows excluded (a capture ran): {host['windows_excluded']}"
    )
    print(f"proxy under wrk (-t1 -c8), {proxy['rounds']} alternating rounds of {args.window} s:")
    print(
        f"{'  main thread on-CPU s per wall s':<46} {proxy['main_cpu_with']:>10.4f} "
        f"{proxy['main_cpu_without']:>10.4f} {proxy['main_thread_cpu_ratio']:>9.4f}"
    )
    print(
        f"{'  requests/s':<46} {proxy['rps_with']:>10,.0f} {proxy['rps_without']:>10,.0f} "
        f"{proxy['throughput_ratio']:>9.3f}"
    )
    print(
        f"{'  p99 latency, ms':<46} {proxy['p99_ms_with']:>10.2f} {proxy['p99_ms_without']:>10.2f} "
        f"{proxy['p99_ratio']:>9.3f}"
    )
    low, high = proxy["holmespy_cpu_pct_range"]
    print(
        f"  holmespy's threads: {proxy['holmespy_cpu_pct_of_core']:.4f} % of one core "
        f"(rounds {low:.4f}..{high:.4f}); rounds excluded (a capture ran): "
        f"{proxy['rounds_excluded']}"
    )
    print(
        f"idle proxy: holmespy's threads {idle['holmespy_cpu_pct']:.4f} % of one core "
        f"over {idle['seconds']:.0f} s ({idle['ticks']} ticks)"
    )
    for where, events in (("busy host", host["events"]), ("proxy", proxy["events"])):
        for e in events:
            print(f"  {where}: {e['rule']} event at {e['time']}: {e['reason']}")
    if args.json:
        args.json.write_text(json.dumps(r, indent=2) + "\n")


if __name__ == "__main__":
    main()
