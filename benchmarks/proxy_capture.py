"""Capture cost: the proxy's throughput while holmespy captures a CPU profile of it.

    python -m benchmarks.proxy_capture [--rounds 4] [--rates 25,50,100] [--json PATH]

The example proxy runs under wrk with holmespy (1 s interval, default rules,
HOLMES_CPU_ENGINE=pyspy), loaded from its first second so that its rules warm
up on the load; one first capture, not measured, starts the cpu rule's
cooldown. Then, in the same process, wrk windows without a capture alternate
with windows during one, starting and ending without (B C B C ... B): each
capture window is compared with the mean of the two around it. Each round
takes one capture at each profile rate, in a rotating order, so every rate
sees the same machine.

A capture is asked for through the proxy's admin endpoint
(`/_admin/capture/cpu?rate=N`), which makes holmespy's cpu rule fire on the
next tick through the usual path: the watcher queues it, the capture thread
writes threads.txt, runs py-spy on the process for the profile window (5 s)
with the task dump beside it, converts py-spy's output to pprof and
publishes the event. Each capture window lasts the profile window + 1 s, so
the conversion and the writing fall inside it. A baseline window in which a
capture ran anyway is left out. Ratios are per capture, then the median.

Throughput ratios on two shared cores spread by ±10 % from one window to
the next (REFERENCE), more than the cost measured; what the cost is made of
is measured too, in CPU time: py-spy's (a child process, from the proxy's
reaped children), holmespy's threads', the proxy main thread's, and the
whole machine's (/proc/stat) to show the cores were saturated. On saturated
cores whatever the capture uses (py-spy, holmespy's threads above their idle
use) is taken from the proxy, its upstream and wrk alike, so `1 - its share
of the machine` estimates the throughput ratio without the windows' noise.
That estimate is what the goal is judged on; the measured ratio is shown
beside it, with how much of a core the proxy got: on a shared machine the
neighbours' load moves it far more than a capture does.
"""

from __future__ import annotations

import argparse
import json
import os
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
"""Of the proxy's throughput without a capture, judged from CPU time (see the docstring)."""
ENGINE = "pyspy"
RATES = (25, 50, 100)

Row = tuple[str, str, str, str, bool | None]


def window(
    proxy: rig.Server, upstream: rig.Server, seconds: int, tids: list[int]
) -> dict[str, Any]:
    wrk = rig.start_wrk(proxy.url("/"), seconds)
    time.sleep(0.2)
    cpu = rig.CpuWindow(proxy.pid, [proxy.pid, *tids])
    others0 = rig.process_cpu_s(upstream.pid) + rig.process_cpu_s(wrk.pid)
    busy0, idle0 = rig.machine_cpu_s()
    time.sleep(seconds - 0.4)
    wall, used = cpu.close()
    others1 = rig.process_cpu_s(upstream.pid) + rig.process_cpu_s(wrk.pid)
    busy1, idle1 = rig.machine_cpu_s()
    load = rig.finish_wrk(wrk)
    busy, idle = busy1 - busy0, idle1 - idle0
    return {
        **load,
        "wall_s": wall,
        "main_cpu_per_wall": used[0] / wall,
        "holmespy_cpu_pct": 100 * sum(used[1:]) / wall,
        "upstream_and_wrk_cpu_pct": 100 * (others1 - others0) / wall,
        "machine_busy_pct": 100 * busy / (busy + idle) if busy + idle > 0 else None,
        # The capture lanes sleep on their queues unless a capture runs.
        "capturing": any(x > 0 for x in used[2:]),
    }


def captured(
    proxy: rig.Server,
    upstream: rig.Server,
    dumps: Path,
    seconds: int,
    tids: list[int],
    rate: int,
) -> dict[str, Any]:
    before = {e["id"] for e in rig.events(dumps)}
    children = rig.reaped_children_cpu_s(proxy.pid)
    answer = rig.request(proxy, f"/_admin/capture/cpu?rate={rate}", method="POST")
    if not answer.get("captured"):
        raise rig.RigError(f"no capture: {answer}")
    figures: dict[str, Any] = window(proxy, upstream, seconds, tids)
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
        rate=rate,
        pyspy_cpu_pct=100 * pyspy_cpu / (cpu.get("seconds") or seconds),
        event=new[0]["id"],
        engine=cpu.get("engine"),
        rate_asked=cpu.get("rate_asked"),
        capture_s=cpu.get("seconds"),
        samples=cpu.get("samples"),
        rate_achieved=cpu.get("rate_achieved"),
        published_after_window_s=round(time.monotonic() - ended, 2),
    )
    return figures


def rotated(rates: list[int], n: int) -> list[int]:
    k = n % len(rates)
    return rates[k:] + rates[:k]


def measure(rounds: int, rates: list[int]) -> dict[str, Any]:
    defaults = Config()
    profile = defaults.cpu_profile_seconds
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
            rig.wait_ticks(proxy, 11, timeout=30)
            # One capture first, not measured: it starts the cpu rule's cooldown
            # (1 min), so that the load's own swings cannot fire a capture into a
            # baseline window while the rounds run; and it starts the capture lanes,
            # whose threads are then measured.
            captured(
                proxy, upstream, dumps, seconds, rig.holmespy_tids(proxy), defaults.cpu_profile_rate
            )
            tids = rig.holmespy_tids(proxy)
            # B C B C ... B: each capture window against the mean of its two neighbours.
            bases = [window(proxy, upstream, seconds, tids)]
            caps: list[tuple[int, dict[str, Any]]] = []  # (index of the baseline before it, cap)
            failures: list[str] = []
            for n in range(rounds):
                for rate in rotated(rates, n):
                    try:
                        cap = captured(proxy, upstream, dumps, seconds, tids, rate)
                        caps.append((len(bases) - 1, cap))
                    except rig.RigError as exc:
                        failures.append(f"{rate} Hz: {exc}"[:300])
                    bases.append(window(proxy, upstream, seconds, tids))
            pairs = []
            for i, cap in caps:
                clean = [b for b in bases[i : i + 2] if not b["capturing"]]
                if clean:
                    pairs.append((cap, rig.between(clean[0], clean[-1])))
            if not pairs:
                raise NotSteady(
                    "no capture window had a baseline without a capture beside it "
                    f"(failed captures: {failures or 'none'})"
                )
            unasked = len(rig.events(dumps)) - len(caps) - 1
            contaminated = sum(b["capturing"] for b in bases)
        finally:
            proxy.stop()
            upstream.stop()
    by_rate = {str(rate): per_rate([p for p in pairs if p[0]["rate"] == rate]) for rate in rates}
    default = by_rate.get(str(defaults.cpu_profile_rate)) or next(iter(by_rate.values()))
    baseline_busy = [b["machine_busy_pct"] for b in bases if b["machine_busy_pct"] is not None]
    return {
        "engine": ENGINE,
        "engines_ran": sorted({str(c.get("engine")) for c, _ in pairs}),
        "profile_seconds": profile,
        "window_seconds": seconds,
        "rounds": rounds,
        "rates": rates,
        "default_rate": defaults.cpu_profile_rate,
        "ncores": len(os.sched_getaffinity(0)),
        "machine_busy_pct_baseline": statistics.median(baseline_busy) if baseline_busy else None,
        "proxy_main_cpu_baseline": statistics.median(b["main_cpu_per_wall"] for b in bases),
        "by_rate": by_rate,
        # The default rate's figures, where the goal is judged (and the plot reads them).
        **{k: default[k] for k in DEFAULT_KEYS if k in default},
        "failed_captures": failures,
        "other_events": unasked,
        "baselines_with_a_capture": contaminated,
        "pairs": [{"capture": c, "base": b} for c, b in pairs],
    }


DEFAULT_KEYS = (
    "throughput_ratio",
    "throughput_ratio_range",
    "main_thread_cpu_ratio",
    "p99_ratio",
    "holmespy_cpu_pct_during_capture",
    "pyspy_cpu_pct",
    "rps_capture",
    "rps_base",
)


def per_rate(pairs: list[tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, Any]:
    if not pairs:
        return {"pairs": 0}
    ratios = [c["rps"] / b["rps"] for c, b in pairs]
    cpu_ratios = [c["main_cpu_per_wall"] / b["main_cpu_per_wall"] for c, b in pairs]
    p99 = [c["p99_ms"] / b["p99_ms"] for c, b in pairs if c.get("p99_ms") and b.get("p99_ms")]
    pyspy = [c["pyspy_cpu_pct"] for c, _ in pairs]
    cost = [c["pyspy_cpu_pct"] + c["holmespy_cpu_pct"] - b["holmespy_cpu_pct"] for c, b in pairs]
    ncores = len(os.sched_getaffinity(0))
    achieved = [c["rate_achieved"] for c, _ in pairs if c.get("rate_achieved")]
    return {
        "pairs": len(pairs),
        "throughput_ratio": statistics.median(ratios),
        "throughput_ratio_range": [min(ratios), max(ratios)],
        "main_thread_cpu_ratio": statistics.median(cpu_ratios),
        "main_thread_cpu_ratio_range": [min(cpu_ratios), max(cpu_ratios)],
        "p99_ratio": statistics.median(p99) if p99 else None,
        "pyspy_cpu_pct": statistics.median(pyspy),
        "pyspy_cpu_pct_range": [min(pyspy), max(pyspy)],
        # On saturated cores what the capture uses (py-spy, and holmespy's threads
        # above their idle use) comes out of everyone's share alike.
        "cpu_estimate_ratio": 1 - statistics.median(cost) / (100 * ncores),
        "holmespy_cpu_pct_during_capture": statistics.median(
            c["holmespy_cpu_pct"] for c, _ in pairs
        ),
        "rate_achieved": statistics.median(achieved) if achieved else None,
        "rps_capture": statistics.median(c["rps"] for c, _ in pairs),
        "rps_base": statistics.median(b["rps"] for _, b in pairs),
    }


def summary(r: dict[str, Any]) -> list[Row]:
    default = r["by_rate"].get(str(r["default_rate"]), {})
    rows: list[Row] = []
    if default.get("pairs"):
        low, high = default["throughput_ratio_range"]
        plow, phigh = default["pyspy_cpu_pct_range"]
        rows.append(
            (
                "proxy_capture",
                f"proxy throughput during a CPU capture / without, from CPU time ({r['engine']}, "
                f"{r['profile_seconds']:g} s, {r['default_rate']} Hz default, "
                f"{r['ncores']} saturated cores)",
                f"{default['cpu_estimate_ratio']:.3f} (py-spy {default['pyspy_cpu_pct']:.1f} % "
                f"of a core, {plow:.1f}..{phigh:.1f}; holmespy's threads "
                f"{default['holmespy_cpu_pct_during_capture']:.2f} %)",
                f"≥ {GOAL}",
                default["cpu_estimate_ratio"] >= GOAL,
            )
        )
        rows.append(
            (
                "proxy_capture",
                "  same, wrk req/s measured (coarse: neighbours move it by ±10-25 %)",
                f"{default['throughput_ratio']:.3f} ({default['pairs']} rounds "
                f"{low:.3f}..{high:.3f}; main-thread CPU {default['main_thread_cpu_ratio']:.3f})",
                "-",
                None,
            )
        )
    else:
        rows.append(("proxy_capture", "at the default rate", "no capture measured", "-", False))
    for rate in r["rates"]:
        x = r["by_rate"][str(rate)]
        if not x.get("pairs"):
            continue
        low, high = x["throughput_ratio_range"]
        rows.append(
            (
                "proxy_capture",
                f"  at {rate} Hz: py-spy's CPU; CPU estimate; req/s measured",
                f"{x['pyspy_cpu_pct']:.1f} % of a core; {x['cpu_estimate_ratio']:.3f}; "
                f"{x['throughput_ratio']:.3f} ({low:.2f}..{high:.2f})",
                "-",
                None,
            )
        )
    busy = r.get("machine_busy_pct_baseline")
    if busy is not None:
        rows.append(
            (
                "proxy_capture",
                f"  machine busy in the baseline windows ({r['ncores']} cores); proxy main thread",
                f"{busy:.1f} %; {100 * r.get('proxy_main_cpu_baseline', 0):.0f} % of a core",
                "-",
                None,
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4, help="captures per rate")
    parser.add_argument("--rates", default=",".join(map(str, RATES)), help="samples/s to compare")
    parser.add_argument("--quick", action="store_true", help="2 rounds at the default rate")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rates = [int(x) for x in args.rates.split(",")]
    if args.quick:
        args.rounds, rates = 2, [Config().cpu_profile_rate]
    try:
        r = measure(args.rounds, rates)
    except outcome.NotMeasured as exc:
        outcome.report(args.json, exc)
        return
    print(
        f"engine {r['engine']} (ran: {', '.join(r['engines_ran'])}), profile "
        f"{r['profile_seconds']:g} s, windows of {r['window_seconds']} s under wrk (-t1 -c8); "
        f"machine busy {r['machine_busy_pct_baseline']:.1f} % of {r['ncores']} cores "
        "in the baselines"
    )
    print(
        f"{'rate':>6} {'pairs':>5} {'req/s':>8} {'range':>13} {'main CPU':>9} {'p99':>6} "
        f"{'py-spy CPU':>11} {'estimate':>9} {'achieved':>9}"
    )
    for rate in r["rates"]:
        x = r["by_rate"][str(rate)]
        if not x.get("pairs"):
            print(f"{rate:>4}Hz     0")
            continue
        low, high = x["throughput_ratio_range"]
        p99 = f"{x['p99_ratio']:.3f}" if x["p99_ratio"] is not None else "-"
        achieved = f"{x['rate_achieved']:.0f} Hz" if x["rate_achieved"] else "-"
        print(
            f"{rate:>4}Hz {x['pairs']:>5} {x['throughput_ratio']:>8.3f} "
            f"{low:>6.3f}..{high:<5.3f} {x['main_thread_cpu_ratio']:>9.3f} {p99:>6} "
            f"{x['pyspy_cpu_pct']:>9.1f} % {x['cpu_estimate_ratio']:>9.3f} {achieved:>9}"
        )
    print(
        f"events not asked for: {r['other_events']}, baseline windows left out: "
        f"{r['baselines_with_a_capture']}, failed captures: {len(r['failed_captures'])}"
    )
    for failure in r["failed_captures"]:
        print(f"  {failure}")
    if args.json:
        args.json.write_text(json.dumps(r, indent=2) + "\n")


if __name__ == "__main__":
    main()
