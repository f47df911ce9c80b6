"""Reaction: from the onset of each injected failure to its event on disk.

    python -m benchmarks.reaction [--faults cpu,leak,threads,tasks,block] [--json PATH]

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


def react(fault: str, rate: float, workdir: Path, upstream: rig.Server) -> dict[str, Any]:
    dumps = workdir / f"dumps-{fault}"
    proxy = rig.start_proxy(
        workdir,
        upstream,
        name=f"proxy-{fault}",
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


def measure(faults: list[str], rate: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="holmespy-reaction-") as tmp:
        workdir = Path(tmp)
        upstream = rig.start_upstream(workdir)
        try:
            runs = [react(fault, rate, workdir, upstream) for fault in faults]
        finally:
            upstream.stop()
    done = [r["reaction_s"] for r in runs if r["reaction_s"] is not None]
    return {
        "interval_s": INTERVAL,
        "load_rps": rate,
        "runs": runs,
        "median_reaction_s": statistics.median(done) if done else None,
    }


def summary(result: dict[str, Any]) -> list[tuple[str, str, str, str, bool | None]]:
    rows = []
    for r in result["runs"]:
        goal_text = f"≤ {r['goal_s']:g} s"
        if r["reaction_s"] is None:
            rows.append(("reaction", r["what"], "no event", goal_text, False))
            continue
        rows.append(
            (
                "reaction",
                f"{r['what']} -> {r['rule']} event",
                f"{r['reaction_s']:.2f} s (detect {r['detect_s']:.2f} "
                f"+ capture {r['capture_s']:.2f})",
                goal_text,
                r["met"],
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faults", default=",".join(EXPECTED))
    parser.add_argument("--rate", type=float, default=200.0, help="paced load, requests/s")
    parser.add_argument(
        "--quick", action="store_true", help="for `benchmarks --quick`: already one run per fault"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = measure(args.faults.split(","), args.rate)
    print(f"interval {INTERVAL:g} s, paced load {args.rate:g} req/s, default rules")
    print(
        f"{'fault':<28} {'rule':<7} {'reaction':>9} {'detect':>8} {'capture':>8} {'goal':>7}  met"
    )
    for r in result["runs"]:
        if r["reaction_s"] is None:
            print(f"{r['what']:<28} {'-':<7} {'none':>9} {'':>8} {'':>8} {r['goal_s']:>6g}s  no")
            continue
        print(
            f"{r['what']:<28} {r['rule']:<7} {r['reaction_s']:>8.2f}s {r['detect_s']:>7.2f}s "
            f"{r['capture_s']:>7.2f}s {r['goal_s']:>6g}s  {'yes' if r['met'] else 'NO'}"
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
