"""Draw `python -m benchmarks --json` figures: reaction times and overheads against goals.

    python -m benchmarks.plot benchmarks/results.json docs/performance.png

Needs matplotlib (`pip install -e '.[bench]'`); draws off-screen (Agg).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

GOAL_COLOR = "#c0392b"
BAR = "#2c7fb8"
LIGHT = "#a6cee3"


def draw(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def ran(name: str) -> dict[str, Any] | None:
        result = results.get(name)
        if not isinstance(result, dict) or "error" in result or "not_measured" in result:
            return None
        return result

    fig, axes = plt.subplots(2, 2, figsize=(13, 8.5))
    _reaction(axes[0][0], ran("reaction"))
    _own_cpu(axes[0][1], ran("idle_cost"), ran("proxy_capture"))
    _ratios(axes[1][0], ran("idle_cost"), ran("proxy_capture"))
    _growth(axes[1][1], ran("growth"))
    m = results.get("_machine", {})
    fig.suptitle(
        f"holmespy cost and reaction — {m.get('nproc', '?')} CPUs ({m.get('cpu_model', '?')}), "
        f"Python {m.get('python', '?')}, {m.get('date', '')[:10]}",
        fontsize=12,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _missing(ax: Any, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what} figures", ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()


def _reaction(ax: Any, r: dict[str, Any] | None) -> None:
    if not r or "runs" not in r:
        return _missing(ax, "reaction")
    from benchmarks.reaction import by_fault

    faults = [f for f in by_fault(r) if "median" in f]
    if not faults:
        return _missing(ax, "reaction")
    runs = [f["median"] for f in faults]
    labels = [f"{x['what']}\n({x['rule']} event)" for x in runs]
    ys = range(len(runs))
    detect = [x["detect_s"] for x in runs]
    capture = [x["capture_s"] for x in runs]
    ax.barh(ys, detect, color=BAR, label="onset → rule fires (median run)")
    ax.barh(ys, capture, left=detect, color=LIGHT, label="fires → event on disk")
    for y, f in zip(ys, faults, strict=True):
        x = f["median"]
        ax.plot([x["goal_s"]] * 2, [y - 0.4, y + 0.4], color=GOAL_COLOR, lw=2.5)
        if f["runs"] > 1:
            ax.plot([f["low_s"], f["high_s"]], [y, y], color="black", lw=1)
        end = max(f["high_s"], x["reaction_s"])
        ax.text(end + 0.1, y, f"{x['reaction_s']:.1f} s", va="center", fontsize=9)
    ax.plot([], [], color=GOAL_COLOR, lw=2.5, label="goal: interval + capture window + 1 s")
    if any(f["runs"] > 1 for f in faults):
        ax.plot([], [], color="black", lw=1, label="range over runs")
    ax.set_yticks(list(ys), labels, fontsize=9)
    ax.set_xlim(0, max(x["goal_s"] for x in runs) * 1.9)  # room for the legend on the right
    ax.invert_yaxis()
    ax.set_xlabel("seconds from the fault's onset")
    ax.set_title(f"Reaction (interval {r['interval_s']:g} s, default rules)")
    ax.legend(fontsize=8, loc="center right")
    return None


def _own_cpu(ax: Any, idle: dict[str, Any] | None, capture: dict[str, Any] | None) -> None:
    if not idle:
        return _missing(ax, "idle-cost")
    names = ["busy asyncio host", "proxy under wrk", "idle proxy"]
    values = [
        idle["host"]["holmespy_cpu_pct_of_core"],
        idle["proxy"]["holmespy_cpu_pct_of_core"],
        idle["idle_proxy"]["holmespy_cpu_pct"],
    ]
    ax.bar(names, values, color=BAR)
    for x, v in enumerate(values):
        ax.text(x, v, f"{v:.3f} %", ha="center", va="bottom", fontsize=9)
    ax.axhline(0.2, color=GOAL_COLOR, lw=2, label="goal ≤ 0.2 % of a core")
    ax.set_ylim(0, 0.25)
    ax.set_ylabel("% of one core")
    title = "holmespy's own threads, nothing firing (1 s interval)"
    if capture and "pyspy_cpu_pct" in capture:
        title += (
            f"\nduring a CPU capture: {capture['holmespy_cpu_pct_during_capture']:.2f} % "
            f"+ py-spy {capture['pyspy_cpu_pct']:.0f} % (not drawn)"
        )
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper right")
    return None


def _ratios(ax: Any, idle: dict[str, Any] | None, capture: dict[str, Any] | None) -> None:
    bars: list[tuple[str, float, list[float], float | None]] = []
    if idle:
        host, proxy = idle["host"], idle["proxy"]
        bars.append(
            (
                "busy host\nmain thread\nnot GIL-blocked",
                host["main_thread_unblocked_ratio"],
                host["main_thread_unblocked_ratio_range"],
                0.999,
            )
        )
        bars.append(
            (
                "busy host\nmain thread\non-CPU (coarse)",
                host["main_thread_cpu_ratio"],
                host["main_thread_cpu_ratio_range"],
                None,
            )
        )
        bars.append(
            (
                "proxy req/s,\nnothing firing\n(coarse)",
                proxy["throughput_ratio"],
                proxy["throughput_ratio_range"],
                None,
            )
        )
    if capture and "throughput_ratio" in capture:
        rate = capture.get("default_rate", 100)
        default = capture.get("by_rate", {}).get(str(rate), {})
        if "cpu_estimate_ratio" in default:
            estimate = default["cpu_estimate_ratio"]
            bars.append(
                (
                    f"proxy, CPU\ncapture {rate} Hz\n(CPU time)",
                    estimate,
                    [estimate, estimate],
                    0.97,
                )
            )
        bars.append(
            (
                "proxy req/s,\nCPU capture\n(coarse)",
                capture["throughput_ratio"],
                capture["throughput_ratio_range"],
                None,
            )
        )
    if not bars:
        return _missing(ax, "overhead")
    xs = range(len(bars))
    values = [b[1] for b in bars]
    low = [b[1] - b[2][0] for b in bars]
    high = [b[2][1] - b[1] for b in bars]
    ax.bar(xs, values, color=BAR, yerr=[low, high], capsize=4, ecolor="#555")
    for x, (_, v, _, goal) in zip(xs, bars, strict=True):
        ax.text(x + 0.05, v, f" {v:.3f}", va="bottom", fontsize=9)
        if goal is not None:
            ax.plot([x - 0.4, x + 0.4], [goal] * 2, color=GOAL_COLOR, lw=2.5)
    ax.plot([], [], color=GOAL_COLOR, lw=2.5, label="goal (≥)")
    ax.errorbar([], [], yerr=[], color="#555", label="range over windows / rounds")
    ax.axhline(1.0, color="#888", lw=0.8, ls="--")
    ax.set_xticks(list(xs), [b[0] for b in bars], fontsize=7.5)
    bottom = min(0.85, *(b[2][0] for b in bars)) - 0.02
    top = max(1.1, *(b[2][1] for b in bars)) + 0.02
    ax.set_ylim(bottom, top)
    ax.set_ylabel("with holmespy / without (same run)")
    ax.set_title("Overhead as ratios (1.0 = no cost)")
    ax.legend(fontsize=8, loc="lower left")
    return None


def _growth(ax: Any, growth: dict[str, Any] | None) -> None:
    if not growth:
        return _missing(ax, "growth")
    timed = [row for row in growth["rows"] if "tick_us" in row and "raw_stat_read_us" in row]
    if not timed:
        return _missing(ax, "growth")
    for kind, marker, below in (("tasks", "o", False), ("threads", "s", True)):
        rows = [row for row in timed if kind in row]
        if rows:
            ax.plot(
                [row[kind] for row in rows],
                [row["tick_us"] for row in rows],
                marker=marker,
                label=f"tick, host with N {kind}",
            )
            for row in rows:
                ax.annotate(
                    f"{row['tick_us']:.0f} µs",
                    (row[kind], row["tick_us"]),
                    textcoords="offset points",
                    xytext=(4, -12 if below else 6),  # the two curves start together
                    fontsize=8,
                )
    raw = statistics.median(row["raw_stat_read_us"] for row in timed)
    ax.axhline(raw, color="#888", ls="--", lw=1, label="a raw /proc/self/stat read")
    ax.axhline(
        TICK_GOAL * raw,
        color=GOAL_COLOR,
        lw=1.5,
        label=f"{TICK_GOAL:g}x a raw read (tick_cost's goal, no tasks)",
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("N (tasks or threads in the host)")
    ax.set_ylabel("CPU µs per tick (averaged over ticks)")
    ax.set_title("Tick cost as the host grows (at 1 s, 1,000 µs = 0.1 % of a core)", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    return None


TICK_GOAL = 5.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("output", type=Path)
    args = parser.parse_args()
    draw(json.loads(args.results.read_text()), args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
