"""Reaction: from the onset of each injected failure to its event on disk.

    python -m benchmarks.reaction [--faults cpu,leak,threads,tasks,block] [--repeat 3] [--json PATH]

For each fault a fresh example proxy (`examples/proxy`, HOLMES_INTERVAL=1s,
default rules, HOLMES_MEM_LIMIT=512MiB standing in for a container's limit)
serves a steady paced load until holmespy's rules are warm (11 ticks). The
fault is then switched on through the admin endpoint (the onset), and the
dump folder is polled every 10 ms until the event of the expected rule is
published. The goal is interval + capture window + 1 s, where the window is
what that rule's capture must wait for: the CPU profile for `cpu`, the heap
tracing window for `mem` (twice for `gcheap`), nothing for `thread` and `task`.
Each event is split into detection (onset to the firing tick, from
`event.json`'s time) and capture (firing tick to the published folder).
Each fault runs `--repeat` times, each time in a fresh proxy; the summary
gives the median and the range, and a goal is met when every run met it.
A run that could not be measured (the proxy did not warm up or answer) is a
row of its own; the other runs still go on.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import proxy_rig as rig
from benchmarks.outcome import NotMeasured
from holmespy.config import Config

INTERVAL = 1.0
# Fault -> the rules whose event answers it. A leak may first show as RSS after
# a full GC (gcheap) rather than as RSS itself (mem); either is the right answer.
EXPECTED: dict[str, tuple[str, ...]] = {
    "cpu": ("cpu",),
    "leak": ("mem", "gcheap"),
    "threads": ("thread",),
    "tasks": ("task",),
    "block": ("cpu",),
}
WHAT = {
    "cpu": "CPU hot path",
    "leak": "memory leak",
    "threads": "thread leak",
    "tasks": "task pile-up",
    "block": "handler blocking the loop",
}


def capture_window(rule: str) -> float:
    defaults = Config()
    return {
        "cpu": defaults.cpu_profile_seconds,
        "mem": defaults.heap_seconds,
        "gcheap": 2 * defaults.heap_seconds,
    }.get(rule, 0.0)


def goal(rule: str) -> float:
    return INTERVAL + capture_window(rule) + 1.0


def react(
    fault: str, rate: float, workdir: Path, upstream: rig.Server, run: int = 0
) -> dict[str, Any]:
    try:
        return _react(fault, rate, workdir, upstream, run)
    except NotMeasured as exc:
        return {
            "fault": fault,
            "what": WHAT[fault],
            "expected_rules": list(EXPECTED[fault]),
            "reaction_s": None,
            "met": False,
            "goal_s": goal(EXPECTED[fault][0]),
            "error": str(exc),
        }


def _react(
    fault: str, rate: float, workdir: Path, upstream: rig.Server, run: int
) -> dict[str, Any]:
    dumps = workdir / f"dumps-{fault}-{run}"
    proxy = rig.start_proxy(
        workdir,
        upstream,
        name=f"proxy-{fault}-{run}",
        HOLMES_INTERVAL=f"{INTERVAL:g}s",
        HOLMES_DUMP_PATH=str(dumps),
        HOLMES_SERVICE="proxy",
    )
    load = rig.start_paced_load(proxy.url("/"), rate, 120)
    try:
        rig.wait_ticks(proxy, 11, timeout=30)
        time.sleep(0.2)  # off the tick just seen: the onset falls at a random phase
        quiet = rig.events(dumps)
        onset = time.time()
        rig.request(proxy, f"/_admin/fail/{fault}", method="POST")
        deadline = time.monotonic() + goal("gcheap") + 20
        event = None
        while event is None and time.monotonic() < deadline:
            event = next((e for e in rig.events(dumps) if e["rule"] in EXPECTED[fault]), None)
            if event is None:
                time.sleep(0.01)
        seen = time.time()
    finally:
        rig.stop_process(load)
        proxy.stop()
    result: dict[str, Any] = {
        "fault": fault,
        "what": WHAT[fault],
        "expected_rules": list(EXPECTED[fault]),
        "events_before_onset": len(quiet),
    }
    if event is None:
        result.update(reaction_s=None, met=False, goal_s=goal(EXPECTED[fault][0]))
        return result
    fired = _epoch(event["time"])
    result.update(
        rule=event["rule"],
        event=event["id"],
        value=event["value"],
        reason=event["reason"],
        reaction_s=round(seen - onset, 3),
        detect_s=round(fired - onset, 3),
        capture_s=round(seen - fired, 3),
        goal_s=goal(event["rule"]),
        window_s=capture_window(event["rule"]),
        captures={k: v.get("seconds") for k, v in event.get("captures", {}).items()},
    )
    result["met"] = result["reaction_s"] <= result["goal_s"]
    return result


def _epoch(iso: str) -> float:
    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def measure(faults: list[str], rate: float, repeat: int = 1) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="holmespy-reaction-") as tmp:
        workdir = Path(tmp)
        upstream = rig.start_upstream(workdir)
        try:
            # Faults interleaved (cpu, leak, ..., cpu, leak, ...): a slow minute of
            # the machine then spreads over every fault instead of hitting one.
            runs = [
                react(fault, rate, workdir, upstream, n) for n in range(repeat) for fault in faults
            ]
        finally:
            upstream.stop()
    done = [r["reaction_s"] for r in runs if r["reaction_s"] is not None]
    return {
        "interval_s": INTERVAL,
        "load_rps": rate,
        "repeat": repeat,
        "runs": runs,
        "median_reaction_s": statistics.median(done) if done else None,
    }


def by_fault(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Per fault, in the order first run: the median run's figures, the range and the verdict."""
    faults: dict[str, list[dict[str, Any]]] = {}
    for r in result["runs"]:
        faults.setdefault(r["fault"], []).append(r)
    out = []
    for fault, runs in faults.items():
        done = sorted((r for r in runs if r["reaction_s"] is not None), key=_reaction)
        failed = [r for r in runs if r["reaction_s"] is None]
        entry: dict[str, Any] = {
            "fault": fault,
            "what": runs[0]["what"],
            "runs": len(runs),
            "failed": len(failed),
            "errors": [r.get("error", "no event") for r in failed],
            "goal_s": runs[0]["goal_s"],
            "met": bool(done) and not failed and all(r["met"] for r in done),
        }
        if done:
            mid = done[(len(done) - 1) // 2]  # the lower median: a run that happened
            entry.update(
                median=mid,
                slowest=done[-1],
                reaction_s=statistics.median(_reaction(r) for r in done),
                low_s=_reaction(done[0]),
                high_s=_reaction(done[-1]),
                goal_s=mid["goal_s"],
            )
        out.append(entry)
    return out


def _reaction(r: dict[str, Any]) -> float:
    value: float = r["reaction_s"]
    return value


def summary(result: dict[str, Any]) -> list[tuple[str, str, str, str, bool | None]]:
    rows = []
    for f in by_fault(result):
        goal_text = f"≤ {f['goal_s']:g} s"
        if "median" not in f:
            why = "; ".join(dict.fromkeys(f["errors"]))
            rows.append(("reaction", f["what"], f"not measured: {why}"[:120], goal_text, False))
            continue
        m = mid = f["median"]
        spread = f"; {f['runs']} runs {f['low_s']:.2f}..{f['high_s']:.2f}" if f["runs"] > 1 else ""
        if f["failed"]:
            spread += f", {f['failed']} without an event"
        slowest = f["slowest"]
        if slowest is not mid and slowest["reaction_s"] > slowest["goal_s"]:
            spread += (
                f"; slowest: detect {slowest['detect_s']:.2f} + capture {slowest['capture_s']:.2f}"
            )
        rows.append(
            (
                "reaction",
                f"{f['what']} -> {m['rule']} event",
                f"{f['reaction_s']:.2f} s (detect {m['detect_s']:.2f} "
                f"+ capture {m['capture_s']:.2f}{spread})",
                goal_text,
                f["met"],
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faults", default=",".join(EXPECTED))
    parser.add_argument("--rate", type=float, default=200.0, help="paced load, requests/s")
    parser.add_argument("--repeat", type=int, default=3, help="runs per fault")
    parser.add_argument("--quick", action="store_true", help="one run per fault")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = measure(args.faults.split(","), args.rate, 1 if args.quick else args.repeat)
    print(f"interval {INTERVAL:g} s, paced load {args.rate:g} req/s, default rules")
    print(
        f"{'fault':<28} {'rule':<7} {'reaction':>9} {'detect':>8} {'capture':>8} {'goal':>7}  met"
    )
    for r in result["runs"]:
        if r["reaction_s"] is None:
            print(f"{r['what']:<28} {'-':<7} {'none':>9} {'':>8} {'':>8} {r['goal_s']:>6g}s  no")
            if "error" in r:
                print(f"  not measured: {r['error']}")
            continue
        print(
            f"{r['what']:<28} {r['rule']:<7} {r['reaction_s']:>8.2f}s {r['detect_s']:>7.2f}s "
            f"{r['capture_s']:>7.2f}s {r['goal_s']:>6g}s  {'yes' if r['met'] else 'NO'}"
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
