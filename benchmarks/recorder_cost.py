"""The flight recorder and the loop watchdog left on: their CPU, the host's main thread, wake-ups.

    python -m benchmarks.recorder_cost [--windows 8] [--window 5] [--idle 20] [--json PATH]

Two parts, each measured side by side in one run (REFERENCE: cores change
speed for seconds at a time, so only ratios taken over the same windows mean
anything):

1. A busy asyncio host (100 CPU-bound tasks on the main thread, as in
   `idle_cost`) with holmespy's defaults (the recorder at 10 Hz, the loop
   watchdog on, 1 s interval) next to the same host without holmespy
   (HOLMES_ENABLE=0). Each host reports its own clocks: the main thread's
   on-CPU time and run-queue wait per wall second, and each holmespy
   thread's CPU time. The busy loop is healthy: no loop event may fire, and
   the largest value its loop rule saw is reported.
2. An idle asyncio service (a server waiting for connections) seven ways:
   without holmespy, holmespy with the recorder and the loop rule off, and
   holmespy's defaults. Its threads' context switches (voluntary and
   involuntary, /proc/PID/task/TID/status) per second are its wake-ups.

Run `python -m benchmarks.recorder_cost --host busy|idle` to see a host alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks import proxy_rig as rig

WARM_TICKS = 11
GOAL_OWN_PCT = 0.3
GOAL_MAIN_RATIO = 0.997

Row = tuple[str, str, str, str, bool | None]


# -- the hosts (run as their own processes) --------------------------------------------


async def busy_task(stop: asyncio.Event) -> None:
    """One of the busy host's tasks: short CPU-bound steps, yielding between them."""
    while not stop.is_set():
        total = 0
        for i in range(500):
            total += i * i
        await asyncio.sleep(0)


def _own_threads() -> dict[str, int]:
    return {
        t.name: time.pthread_getcpuclockid(t.ident)
        for t in threading.enumerate()
        if t.name.startswith("holmespy-") and t.ident is not None
    }


def _loop_values() -> list[float]:
    import holmespy

    watcher = holmespy.current()
    state = watcher.states.get("loop") if watcher is not None else None
    return [value for _, value in state.history] if state is not None else []


async def _busy_main(tasks: int, every: float) -> None:
    import holmespy

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    clocks = _own_threads()
    print(json.dumps({"pid": os.getpid(), "threads": sorted(clocks)}), flush=True)
    workers = [asyncio.create_task(busy_task(stop)) for _ in range(tasks)]
    loop_max = 0.0
    while not stop.is_set():
        loop_max = max([loop_max, *_loop_values()])
        try:
            with open("/proc/thread-self/schedstat") as f:
                wait = int(f.read().split()[1]) / 1e9
        except (OSError, ValueError, IndexError):
            wait = 0.0
        sample = {
            "wall": time.perf_counter(),
            "cpu": time.thread_time(),
            "wait": wait,
            "own": {name: time.clock_gettime(c) for name, c in clocks.items()},
            "loop_max_ms": loop_max,
        }
        print(json.dumps(sample), flush=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
    await asyncio.gather(*workers)
    status = holmespy.status()
    print(json.dumps({"events": status.events, "stacks": status.stacks}, default=str), flush=True)


async def _idle_main() -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    natives = {t.name: t.native_id for t in threading.enumerate()}
    print(json.dumps({"pid": os.getpid(), "threads": natives}), flush=True)
    await stop.wait()
    server.close()


def host(kind: str, tasks: int, every: float) -> None:
    import holmespy

    holmespy.start()
    asyncio.run(_busy_main(tasks, every) if kind == "busy" else _idle_main())


# -- the measurement ------------------------------------------------------------------


def start(kind: str, workdir: Path, name: str, every: float = 5.0, **holmes: str) -> Any:
    env = rig.clean_env(
        HOLMES_INTERVAL="1s",
        HOLMES_DUMP_PATH=str(workdir / f"dumps-{name}"),
        HOLMES_SERVICE=name,
        **holmes,
    )
    return rig.start_reporting(
        ["benchmarks.recorder_cost", "--host", kind, f"--every={every}"], env
    )


def line(proc: subprocess.Popen[str]) -> dict[str, Any]:
    text = proc.stdout.readline() if proc.stdout else ""
    if not text:
        raise rig.RigError("a host stopped reporting")
    sample: dict[str, Any] = json.loads(text)
    return sample


def stop(proc: subprocess.Popen[str]) -> dict[str, Any]:
    proc.terminate()
    try:
        out, _ = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        return {}
    last = out.strip().splitlines()[-1:] or ["{}"]
    result: dict[str, Any] = json.loads(last[0])
    return result


def busy_pair(workdir: Path, windows: int, window: float, tasks: int) -> dict[str, Any]:
    # The host keeps one core busy on purpose, which the CPU rule rightly reports; its
    # py-spy capture would be measured as a neighbour here, so that rule is off.
    a, _ = start("busy", workdir, "with", window, HOLMES_CPU="off")
    b, _ = start("busy", workdir, "without", window, HOLMES_ENABLE="0")
    rows, excluded = [], 0
    try:
        for _ in range(math.ceil((WARM_TICKS + 1.5) / window)):  # past the rules' warm-up
            line(a), line(b)
        prev_a, prev_b = line(a), line(b)
        while len(rows) < windows and excluded < windows + 3:
            cur_a, cur_b = line(a), line(b)
            d_a = {k: cur_a[k] - prev_a[k] for k in ("wall", "cpu", "wait")}
            d_b = {k: cur_b[k] - prev_b[k] for k in ("wall", "cpu", "wait")}
            own = {n: cur_a["own"][n] - prev_a["own"].get(n, 0.0) for n in cur_a["own"]}
            prev_a, prev_b = cur_a, cur_b
            if own.get("holmespy-capture", 0.0) > 0:
                excluded += 1  # a rule fired: a capture is not idle (proxy_capture measures it)
                continue
            rows.append(
                {
                    "on_cpu_ratio": (d_a["cpu"] / d_a["wall"]) / (d_b["cpu"] / d_b["wall"]),
                    "unblocked_ratio": ((d_a["cpu"] + d_a["wait"]) / d_a["wall"])
                    / ((d_b["cpu"] + d_b["wait"]) / d_b["wall"]),
                    "own_pct": {n: 100 * v / d_a["wall"] for n, v in own.items()},
                    "loop_max_ms": cur_a["loop_max_ms"],
                }
            )
    finally:
        end_a = stop(a)
        stop(b)
    if not rows:
        raise rig.RigError("every window of the busy host had a capture running")
    own_total = [sum(r["own_pct"].values()) for r in rows]
    by_thread = {
        n: statistics.median(r["own_pct"].get(n, 0.0) for r in rows) for n in rows[0]["own_pct"]
    }
    on_cpu = [r["on_cpu_ratio"] for r in rows]
    unblocked = [r["unblocked_ratio"] for r in rows]
    return {
        "tasks": tasks,
        "windows": len(rows),
        "window_s": window,
        "holmespy_cpu_pct_of_core": statistics.median(own_total),
        "holmespy_cpu_pct_range": [min(own_total), max(own_total)],
        "holmespy_cpu_pct_by_thread": by_thread,
        "main_thread_cpu_ratio": statistics.median(on_cpu),
        "main_thread_cpu_ratio_range": [min(on_cpu), max(on_cpu)],
        "main_thread_unblocked_ratio": statistics.median(unblocked),
        "main_thread_unblocked_ratio_range": [min(unblocked), max(unblocked)],
        "loop_rule_max_ms": max(r["loop_max_ms"] for r in rows),
        "events": end_a.get("events"),
        "events_fired": [e["rule"] for e in rig.events(workdir / "dumps-with")],
        "windows_excluded": excluded,
        "stacks": end_a.get("stacks"),
    }


def switches(pid: int) -> dict[int, int]:
    """Context switches so far of each thread of `pid` (voluntary + involuntary)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                fields = dict(line.split(":", 1) for line in f if "ctxt_switches" in line)
        except OSError:
            continue
        out[int(tid)] = sum(int(v) for v in fields.values())
    return out


def cpu_ns(pid: int, tids: list[int]) -> int:
    return sum(rig.thread_cpu_ns(pid, tid) for tid in tids)


def idle_services(workdir: Path, seconds: float) -> dict[str, Any]:
    variants = {
        "without holmespy": {"HOLMES_ENABLE": "0"},
        "holmespy, recorder and loop rule off": {"HOLMES_RECORDER": "off", "HOLMES_LOOP": "off"},
        "holmespy, loop rule only": {"HOLMES_RECORDER": "off"},
        "holmespy, recorder only (10 Hz)": {"HOLMES_LOOP": "off"},
        "holmespy, recorder at 5 Hz": {"HOLMES_RECORDER_HZ": "5"},
        "holmespy defaults": {},
        "holmespy, recorder at 20 Hz": {"HOLMES_RECORDER_HZ": "20"},
    }
    hosts = {
        label: start("idle", workdir, f"idle{i}", **env)
        for i, (label, env) in enumerate(variants.items())
    }
    try:
        time.sleep(3.0)  # past start-up and the first discovery of the loop
        before = {label: switches(info["pid"]) for label, (_, info) in hosts.items()}
        cpu_before = {label: cpu_ns(info["pid"], _ours(info)) for label, (_, info) in hosts.items()}
        time.sleep(seconds)
        after = {label: switches(info["pid"]) for label, (_, info) in hosts.items()}
        cpu_after = {label: cpu_ns(info["pid"], _ours(info)) for label, (_, info) in hosts.items()}
    finally:
        for proc, _ in hosts.values():
            stop(proc)
    result: dict[str, Any] = {"seconds": seconds, "variants": {}}
    for label, (_, info) in hosts.items():
        names = {native: name for name, native in info["threads"].items()}
        per_thread = {
            names.get(tid, str(tid)): (after[label][tid] - before[label].get(tid, 0)) / seconds
            for tid in after[label]
        }
        result["variants"][label] = {
            "wakeups_per_s": sum(per_thread.values()),
            "by_thread": per_thread,
            "holmespy_cpu_pct": 100 * (cpu_after[label] - cpu_before[label]) / 1e9 / seconds,
        }
    v = result["variants"]
    result["added_by_holmespy"] = (
        v["holmespy defaults"]["wakeups_per_s"] - v["without holmespy"]["wakeups_per_s"]
    )
    result["added_by_recorder_and_watchdog"] = (
        v["holmespy defaults"]["wakeups_per_s"]
        - v["holmespy, recorder and loop rule off"]["wakeups_per_s"]
    )
    return result


def _ours(info: dict[str, Any]) -> list[int]:
    return [n for name, n in info["threads"].items() if name.startswith("holmespy-")]


def measure(windows: int, window: float, idle_seconds: float, tasks: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="holmespy-recorder-") as tmp:
        workdir = Path(tmp)
        busy = busy_pair(workdir, windows, window, tasks)
        idle = idle_services(workdir, idle_seconds)
    return {"busy": busy, "idle": idle}


def summary(r: dict[str, Any]) -> list[Row]:
    busy, idle = r["busy"], r["idle"]
    low, high = busy["main_thread_unblocked_ratio_range"]
    clow, chigh = busy["main_thread_cpu_ratio_range"]
    recorder = busy["holmespy_cpu_pct_by_thread"].get("holmespy-recorder", 0.0)
    v = idle["variants"]
    return [
        (
            "recorder_cost",
            "holmespy's threads, busy asyncio host, recorder 10 Hz + loop watchdog",
            f"{busy['holmespy_cpu_pct_of_core']:.3f} % of a core "
            f"(recorder thread {recorder:.3f} %)",
            f"≤ {GOAL_OWN_PCT} %",
            busy["holmespy_cpu_pct_of_core"] <= GOAL_OWN_PCT,
        ),
        (
            "recorder_cost",
            "busy host main-thread on-CPU + run-queue wait, with / without",
            f"{busy['main_thread_unblocked_ratio']:.4f} (windows {low:.4f}..{high:.4f})",
            f"≥ {GOAL_MAIN_RATIO}",
            busy["main_thread_unblocked_ratio"] >= GOAL_MAIN_RATIO,
        ),
        (
            "recorder_cost",
            "  same, on-CPU only (neighbours move it)",
            f"{busy['main_thread_cpu_ratio']:.4f} (windows {clow:.4f}..{chigh:.4f})",
            "-",
            None,
        ),
        (
            "recorder_cost",
            "busy healthy loop: largest loop-rule value, events fired",
            f"{busy['loop_rule_max_ms']:.0f} ms, {len(busy['events_fired'])} events",
            "0 events",
            not busy["events_fired"],
        ),
        (
            "recorder_cost",
            "idle service wake-ups/s: without / rec+loop off / defaults",
            f"{v['without holmespy']['wakeups_per_s']:.1f} / "
            f"{v['holmespy, recorder and loop rule off']['wakeups_per_s']:.1f} / "
            f"{v['holmespy defaults']['wakeups_per_s']:.1f} "
            f"(+{idle['added_by_recorder_and_watchdog']:.1f} from recorder + watchdog)",
            "-",
            None,
        ),
        (
            "recorder_cost",
            "idle service: holmespy's threads, defaults",
            f"{v['holmespy defaults']['holmespy_cpu_pct']:.3f} % of a core",
            f"≤ {GOAL_OWN_PCT} %",
            v["holmespy defaults"]["holmespy_cpu_pct"] <= GOAL_OWN_PCT,
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=8, help="busy-host windows measured")
    parser.add_argument("--window", type=float, default=5.0, help="seconds per window")
    parser.add_argument("--idle", type=float, default=20.0, help="seconds of the idle service")
    parser.add_argument("--tasks", type=int, default=100, help="tasks of the busy host")
    parser.add_argument("--quick", action="store_true", help="fewer, shorter windows")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--host", choices=("busy", "idle"), help=argparse.SUPPRESS)
    parser.add_argument("--every", type=float, default=5.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.host:
        host(args.host, args.tasks, args.every)
        return
    if args.quick:
        args.windows, args.window, args.idle = 3, 3.0, 8.0
    r = measure(args.windows, args.window, args.idle, args.tasks)
    busy, idle = r["busy"], r["idle"]
    print(
        f"busy asyncio host ({busy['tasks']} CPU-bound tasks), holmespy defaults vs without, "
        f"side by side, {busy['windows']} windows of {busy['window_s']:g} s:"
    )
    low, high = busy["holmespy_cpu_pct_range"]
    print(
        f"  holmespy's threads: {busy['holmespy_cpu_pct_of_core']:.4f} % of a core "
        f"(windows {low:.4f}..{high:.4f})"
    )
    for name, pct in sorted(busy["holmespy_cpu_pct_by_thread"].items()):
        print(f"    {name:<20} {pct:.4f} %")
    print(
        f"  main thread, with / without: on-CPU {busy['main_thread_cpu_ratio']:.4f}, "
        f"on-CPU + run-queue wait {busy['main_thread_unblocked_ratio']:.4f}"
    )
    print(
        f"  loop rule: largest value {busy['loop_rule_max_ms']:.1f} ms; "
        f"events fired: {busy['events_fired'] or 'none'}"
    )
    print(f"  recorder: {busy['stacks'].get('recorder') if busy['stacks'] else '?'}")
    print(f"idle asyncio service, {idle['seconds']:g} s, three side by side:")
    for label, v in idle["variants"].items():
        threads = ", ".join(f"{n} {w:.1f}" for n, w in sorted(v["by_thread"].items()) if w >= 0.05)
        print(
            f"  {label:<38} {v['wakeups_per_s']:6.1f} wake-ups/s "
            f"(holmespy CPU {v['holmespy_cpu_pct']:.4f} %): {threads}"
        )
    for row in summary(r):
        print(" | ".join(str(c) for c in row[1:4]))
    if args.json:
        args.json.write_text(json.dumps(r, indent=2) + "\n")


if __name__ == "__main__":
    main()
