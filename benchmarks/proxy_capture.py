"""Capture cost: the proxy's throughput while holmespy captures a CPU profile of it.

    python -m benchmarks.proxy_capture [--rounds 4] [--json PATH]

The example proxy runs under wrk with holmespy (1 s interval, default rules,
HOLMES_CPU_ENGINE=pyspy), loaded from its first second so that its rules warm
up on the load; one first capture, not measured, starts the cpu rule's
cooldown. Then, in the same process, wrk windows without a capture alternate
with windows during one, starting and ending without (B C B C ... B): each
capture window is compared with the mean of the two around it.

A capture is asked for through the proxy's admin endpoint, which makes
holmespy's cpu rule fire on the next tick through the usual path: the watcher
queues it, the capture thread writes threads.txt and tasks.txt, runs py-spy
on the process for the profile window (5 s), converts its output to pprof and
publishes the event. Each capture window lasts the profile window + 1 s, so
the conversion and the writing fall inside it. A baseline window in which a
capture ran anyway is left out. Ratios are per capture, then the median.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import outcome
from benchmarks import proxy_rig as rig
from benchmarks.outcome import NotSteady
from holmespy.config import Config

GOAL = 0.97
ENGINE = "pyspy"


def window(proxy: rig.Server, seconds: int, tids: list[int]) -> dict[str, float]:
    wrk = rig.start_wrk(proxy.url("/"), seconds)
    time.sleep(0.2)
    cpu = rig.CpuWindow(proxy.pid, [proxy.pid, *tids])
    time.sleep(seconds - 0.4)
    wall, used = cpu.close()
    load = rig.finish_wrk(wrk)
    return {
        **load,
        "main_cpu_per_wall": used[0] / wall,
        "holmespy_cpu_pct": 100 * sum(used[1:]) / wall,
        # The capture thread sleeps on its queue unless a capture runs.
        "capturing": len(used) > 2 and used[2] > 0,
    }


def captured(proxy: rig.Server, dumps: Path, seconds: int, tids: list[int]) -> dict[str, Any]:
    before = {e["id"] for e in rig.events(dumps)}
    children = rig.reaped_children_cpu_s(proxy.pid)
    answer = rig.request(proxy, "/_admin/capture/cpu", method="POST")
    if not answer.get("captured"):
        raise rig.RigError(f"no capture: {answer}")
    figures: dict[str, Any] = window(proxy, seconds, tids)
    ended = time.monotonic()
    new: list[dict[str, Any]] = []
    while not new and time.monotonic() < ended + 30:
        new = [e for e in rig.events(dumps) if e["id"] not in before]
        time.sleep(0.05)
    if not new:
        raise rig.RigError("the capture never published its event")
    cpu = new[0]["captures"].get("cpu", {})
    # py-spy runs as the proxy's child, on another core: its CPU is not in the
    # proxy's threads, but on a saturated 2-core machine it is taken from wrk,
    # the upstream or the proxy itself.
    pyspy_cpu = rig.reaped_children_cpu_s(proxy.pid) - children
    figures.update(
        pyspy_cpu_pct=100 * pyspy_cpu / (cpu.get("seconds") or seconds),
        event=new[0]["id"],
        engine=cpu.get("engine"),
        capture_s=cpu.get("seconds"),
        rate_achieved=cpu.get("rate_achieved"),
        published_after_window_s=round(time.monotonic() - ended, 2),
    )
    return figures


def measure(rounds: int) -> dict[str, Any]:
    profile = Config().cpu_profile_seconds
    seconds = int(profile) + 1
    with tempfile.TemporaryDirectory(prefix="holmespy-capture-") as tmp:
        workdir = Path(tmp)
        dumps = workdir / "dumps"
        upstream = rig.start_upstream(workdir)
        proxy = rig.start_proxy(
            workdir,
            upstream,
            HOLMES_INTERVAL="1s",
            HOLMES_DUMP_PATH=str(dumps),
            HOLMES_CPU_ENGINE=ENGINE,
        )
        try:
            rig.finish_wrk(rig.start_wrk(proxy.url("/"), 12))  # rules warm up under the load
            rig.wait_ticks(proxy, 11, timeout=10)
            # One capture first, not measured: it starts the cpu rule's cooldown
            # (1 min), so that the load's own swings cannot fire a capture into a
            # baseline window while the rounds run; and it starts the capture lanes,
            # whose threads are then measured.
            captured(proxy, dumps, seconds, rig.holmespy_tids(proxy))
            tids = rig.holmespy_tids(proxy)
            # B C B C ... B: each capture window against the mean of its two neighbours.
            bases = [window(proxy, seconds, tids)]
            caps = []
            for _ in range(rounds):
                caps.append(captured(proxy, dumps, seconds, tids))
                bases.append(window(proxy, seconds, tids))
            pairs = []
            for i, cap in enumerate(caps):
                clean = [b for b in bases[i : i + 2] if not b["capturing"]]
                if clean:
                    pairs.append((cap, rig.between(clean[0], clean[-1])))
            if not pairs:
                raise NotSteady(
                    "a capture ran in every baseline window (the cpu rule fired on its own)"
                )
            unasked = len(rig.events(dumps)) - rounds - 1
            contaminated = sum(b["capturing"] for b in bases)
        finally:
            proxy.stop()
            upstream.stop()
    ratios = [c["rps"] / b["rps"] for c, b in pairs]
    cpu_ratios = [c["main_cpu_per_wall"] / b["main_cpu_per_wall"] for c, b in pairs]
    p99 = [c["p99_ms"] / b["p99_ms"] for c, b in pairs if c.get("p99_ms") and b.get("p99_ms")]
    return {
        "engine": ENGINE,
        "engines_ran": sorted({str(c.get("engine")) for c, _ in pairs}),
        "profile_seconds": profile,
        "window_seconds": seconds,
        "rounds": rounds,
        "throughput_ratio": statistics.median(ratios),
        "throughput_ratio_range": [min(ratios), max(ratios)],
        "main_thread_cpu_ratio": statistics.median(cpu_ratios),
        "p99_ratio": statistics.median(p99) if p99 else None,
        "holmespy_cpu_pct_during_capture": statistics.median(
            c["holmespy_cpu_pct"] for c, _ in pairs
        ),
        "pyspy_cpu_pct": statistics.median(c["pyspy_cpu_pct"] for c, _ in pairs),
        "rps_capture": statistics.median(c["rps"] for c, _ in pairs),
        "rps_base": statistics.median(b["rps"] for _, b in pairs),
        "other_events": unasked,
        "baselines_with_a_capture": contaminated,
        "pairs": [{"capture": c, "base": b} for c, b in pairs],
    }


def summary(r: dict[str, Any]) -> list[tuple[str, str, str, str, bool | None]]:
    low, high = r["throughput_ratio_range"]
    return [
        (
            "proxy_capture",
            f"proxy req/s during a CPU capture / without ({r['engine']}, "
            f"{r['profile_seconds']:g} s)",
            f"{r['throughput_ratio']:.3f} (rounds {low:.3f}..{high:.3f}; "
            f"main-thread CPU {r['main_thread_cpu_ratio']:.3f})",
            f"≥ {GOAL}",
            r["throughput_ratio"] >= GOAL,
        )
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="2 rounds")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    try:
        r = measure(2 if args.quick else args.rounds)
    except outcome.NotMeasured as exc:
        outcome.report(args.json, exc)
        return
    print(
        f"engine {r['engine']} (ran: {', '.join(r['engines_ran'])}), profile "
        f"{r['profile_seconds']:g} s, windows of {r['window_seconds']} s under wrk (-t1 -c8)"
    )
    print(f"{'':<36} {'capture':>10} {'baseline':>10} {'ratio':>8}")
    print(
        f"{'requests/s':<36} {r['rps_capture']:>10,.0f} {r['rps_base']:>10,.0f} "
        f"{r['throughput_ratio']:>8.3f}"
    )
    low, high = r["throughput_ratio_range"]
    print(f"  rounds ranged {low:.3f} .. {high:.3f}")
    print(f"{'main thread on-CPU per wall s':<36} {'':>21} {r['main_thread_cpu_ratio']:>8.3f}")
    if r["p99_ratio"] is not None:
        print(f"{'p99 latency':<36} {'':>21} {r['p99_ratio']:>8.3f}")
    print(
        f"during a capture: holmespy's threads {r['holmespy_cpu_pct_during_capture']:.2f} % of a "
        f"core, py-spy (a child process) {r['pyspy_cpu_pct']:.1f} %; events not asked for: "
        f"{r['other_events']}, baseline windows left out: {r['baselines_with_a_capture']}"
    )
    if args.json:
        args.json.write_text(json.dumps(r, indent=2) + "\n")


if __name__ == "__main__":
    main()
