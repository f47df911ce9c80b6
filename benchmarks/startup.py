"""Start-up cost: what `import holmespy` and `holmespy.start()` add to a Python process.

    python -m benchmarks.startup [--runs 25] [--json PATH]

Short processes pay it whole: a CLI tool, a cron job, every Python process a
shell script starts under `holmespy run`. Each run starts, in a rotating
order, a bare interpreter (`python -c pass`) and the same interpreter doing
each of:

* `import holmespy`
* `import holmespy; holmespy.start()` (default settings, then the exit with
  its atexit flush)
* the same, waiting for the flight recorder's first tick before exiting: the
  sampling thread makes the recorder (and imports it) at its first wake-up,
  `FIRST_WAKE` (0.1 s) after start, so a process that exits at once never
  pays for it, and one that lives longer pays this
* `python -c pass` under `holmespy run`'s environment (its sitecustomize
  starts holmespy in every Python process)

Each process's wall time (spawn to reaped) and CPU time (its rusage, every
thread) is compared with the mean of the bare interpreters run just before
and after it, so the machine's changes of speed cancel; the figure is the
median over the runs, with the quartiles as its spread. The goal is judged
on CPU time: on a shared machine the wall time of a 20 ms process is mostly
the time it waited for a core. `-X importtime` of
`import holmespy; holmespy.start()` says where what is left goes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.proxy_rig import ROOT, clean_env
from holmespy.cli.run import injection_folder, start_delay
from holmespy.config import Config

GOAL_MS = 10.0

CASES: dict[str, str] = {
    "import": "import holmespy",
    "start": "import holmespy; holmespy.start()",
    "recorded": (
        "import time, holmespy\n"
        "from holmespy.stackwatch import FIRST_WAKE\n"
        "stacks = holmespy.start().stacks\n"
        "time.sleep(FIRST_WAKE)  # not a poll: its wake-ups would be counted too\n"
        "while stacks.recorder is None or stacks.recorder.ticks < 1:\n"
        "    time.sleep(0.001)"
    ),
    "run": "pass",
}
WHAT = {
    "import": "import holmespy",
    "start": "import holmespy; holmespy.start(), and exit",
    "recorded": "the same, living until the recorder's first tick (0.1 s after start)",
    "run": "python -c pass under `holmespy run`",
}

Row = tuple[str, str, str, str, bool | None]


def spawn(code: str, env: dict[str, str]) -> tuple[float, float]:
    """(wall s, CPU s) of `python -c code`, from spawn to reaped."""
    argv = [sys.executable, "-c", code]
    started = time.perf_counter()
    # stderr to /dev/null: a watcher announces itself there (the write is part of the cost).
    quiet = [(os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0)]
    pid = os.posix_spawn(sys.executable, argv, env, file_actions=quiet)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - started
    if status != 0:
        raise RuntimeError(f"{argv} exited with {status}")
    return wall, usage.ru_utime + usage.ru_stime


def measure(runs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="holmespy-startup-") as tmp:
        base = clean_env(HOLMES_DUMP_PATH=str(Path(tmp) / "dumps"))
        # Compiled modules, as an installed package has them, even where the
        # caller's environment says not to write them: into a folder of ours.
        base.pop("PYTHONDONTWRITEBYTECODE", None)
        base["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "pycache")
        delay = start_delay(Config.from_env(base))
        folder = injection_folder(Path(tmp) / "cache", delay=delay)
        run_env = {**base, "PYTHONPATH": os.pathsep.join([str(folder), base["PYTHONPATH"]])}
        envs = {"import": base, "start": base, "recorded": base, "run": run_env}
        for _ in range(2):  # write the .pyc files, warm the page cache
            spawn("pass", base)
            for case, code in CASES.items():
                spawn(code, envs[case])
        extra: dict[str, dict[str, list[float]]] = {c: {"wall": [], "cpu": []} for c in CASES}
        names = list(CASES)
        for n in range(runs):
            order = names[n % len(names) :] + names[: n % len(names)]
            before = spawn("pass", base)
            for case in order:
                wall, cpu = spawn(CASES[case], envs[case])
                after = spawn("pass", base)
                extra[case]["wall"].append(wall - (before[0] + after[0]) / 2)
                extra[case]["cpu"].append(cpu - (before[1] + after[1]) / 2)
                before = after
        bare = [spawn("pass", base) for _ in range(5)]
        importtime = import_breakdown(base)
    return {
        "runs": runs,
        "run_start_delay_s": delay,
        "bare_wall_ms": 1000 * statistics.median(w for w, _ in bare),
        "bare_cpu_ms": 1000 * statistics.median(c for _, c in bare),
        "cases": {case: figures(extra[case]) for case in CASES},
        "importtime": importtime,
    }


def figures(extra: dict[str, list[float]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for clock, values in extra.items():
        ms = sorted(1000 * v for v in values)
        q1, median, q3 = statistics.quantiles(ms, n=4) if len(ms) > 1 else (ms[0],) * 3
        out[clock] = {"median_ms": median, "q1_ms": q1, "q3_ms": q3, "runs_ms": ms}
    return out


def import_breakdown(env: dict[str, str], top: int = 12) -> dict[str, Any]:
    """Where `import holmespy; holmespy.start()` spends its import time (`-X importtime`)."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", CASES["start"]],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    # (The same environment: the .pyc files written above are used.)
    modules: list[tuple[str, int, int]] = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, self_us, cumulative, name = (
            part.strip() for part in line.replace(":", "|", 1).split("|")
        )
        if self_us.isdigit():
            modules.append((name, int(self_us), int(cumulative)))
    total = sum(self_us for _, self_us, _ in modules)
    ours = sum(s for name, s, _ in modules if name.startswith("holmespy"))
    heaviest = sorted(modules, key=lambda m: -m[1])[:top]
    return {
        "modules": len(modules),
        "total_ms": total / 1000,
        "holmespy_own_ms": ours / 1000,
        "imported": sorted(name for name, _, _ in modules),
        "heaviest_self_ms": {name: s / 1000 for name, s, _ in heaviest},
    }


def summary(r: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for case, x in r["cases"].items():
        wall, cpu = x["wall"], x["cpu"]
        # A process that lives past the sampling thread's first wake-up is not a short
        # one: what it pays for the recorder is shown, not judged as start-up.
        judged = case in ("start", "run")
        rows.append(
            (
                "startup",
                f"{WHAT[case]}, added to `python -c pass` (CPU time)",
                f"{cpu['median_ms']:+.1f} ms (quartiles {cpu['q1_ms']:+.1f}..{cpu['q3_ms']:+.1f}; "
                f"wall {wall['median_ms']:+.1f} ms, {wall['q1_ms']:+.1f}..{wall['q3_ms']:+.1f}; "
                f"bare {r['bare_cpu_ms']:.0f} ms CPU)",
                f"≤ {GOAL_MS:g} ms" if judged else "-",
                cpu["median_ms"] <= GOAL_MS if judged else None,
            )
        )
    it = r["importtime"]
    rows.append(
        (
            "startup",
            "  where the import time of start() goes (-X importtime, self)",
            f"{it['modules']} modules, {it['total_ms']:.0f} ms; "
            + ", ".join(f"{k} {v:.1f}" for k, v in list(it["heaviest_self_ms"].items())[:4]),
            "-",
            None,
        )
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=25)
    parser.add_argument("--quick", action="store_true", help="8 runs")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    r = measure(8 if args.quick else args.runs)
    print(
        f"bare `python -c pass`: {r['bare_wall_ms']:.1f} ms wall, {r['bare_cpu_ms']:.1f} ms CPU; "
        f"{r['runs']} runs, each against the bare interpreters either side"
    )
    print(f"{'':<46} {'wall ms (quartiles)':>26} {'CPU ms (quartiles)':>26}")
    for case, x in r["cases"].items():
        w, c = x["wall"], x["cpu"]
        print(
            f"{WHAT[case]:<46} {w['median_ms']:>+8.1f} ({w['q1_ms']:+6.1f}..{w['q3_ms']:+6.1f})"
            f" {c['median_ms']:>+10.1f} ({c['q1_ms']:+6.1f}..{c['q3_ms']:+6.1f})"
        )
    it = r["importtime"]
    print(
        f"import time of start(): {it['modules']} modules, {it['total_ms']:.1f} ms "
        f"(holmespy's own {it['holmespy_own_ms']:.1f} ms); heaviest (self ms):"
    )
    for name, ms in it["heaviest_self_ms"].items():
        print(f"  {name:<40} {ms:6.2f}")
    if args.json:
        args.json.write_text(json.dumps(r, indent=2) + "\n")


if __name__ == "__main__":
    main()
