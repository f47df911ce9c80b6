"""How long a fork can wait for holmespy's lazy imports (`holmespy.lazyimport`).

    python -m benchmarks.fork_wait [--runs 5] [--json PATH]

A fork waits while one of holmespy's threads is inside `with importing:`, so
the longest such block in a process's life is the longest pause holmespy can
add to one of its forks. Each run is a fresh interpreter that goes through
every lazy import holmespy makes: the host's asyncio loop with tasks, then
every rule firing at once (tasks, threads, memory, CPU through py-spy or the
sampler), the events shipped to S3 (a local SeaweedFS, as in the tests) and a
fork. It records how long each guarded block lasted, on which thread and
where; the table gives, per place, the median and the longest block over
the runs. The guard's fork hook is timed too: at that fork (the process's
first) it also loads what a child's watcher needs (`_load_for_children`),
which delays the first fork whether or not a thread of ours was importing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.s3_server import SeaweedFS

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "fork-wait"

PROGRAM = """
import json, os, sys, threading, time
from holmespy import lazyimport

blocks = []


class Timed(lazyimport.ImportGuard):
    def __enter__(self):
        super().__enter__()
        if getattr(self._inside, "depth", 0) == 1:
            caller = sys._getframe(1)
            self._inside.began = (time.perf_counter(), caller.f_code.co_filename, caller.f_lineno)

    def __exit__(self, *exc_info):
        if self._inside.depth == 1:
            began, path, line = self._inside.began
            where = f"{os.path.relpath(path, ROOT)}:{line}"
            thread = threading.current_thread().name.split("-")[:2]
            blocks.append(("-".join(thread), where, time.perf_counter() - began))
        super().__exit__(*exc_info)

    def _before_fork(self):
        began = time.perf_counter()
        super()._before_fork()
        blocks.append(("fork", "the guard's before-fork hook", time.perf_counter() - began))


ROOT = sys.argv[1]
lazyimport.importing.__class__ = Timed  # the process's guard, timed from now on
import asyncio
import holmespy

loop = asyncio.new_event_loop()
threading.Thread(target=loop.run_forever, name="host-loop", daemon=True).start()
for _ in range(10):
    asyncio.run_coroutine_threadsafe(asyncio.sleep(3600), loop)
holmespy.start()
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    sum(i * i for i in range(100_000))  # CPU for the cpu rule
    status = holmespy.status()
    if status.events >= 4 and status.storage.get("uploaded", 0) >= 4:
        break
pid = os.fork()
if pid == 0:
    os._exit(0)
os.waitpid(pid, 0)
status = holmespy.status()
holmespy.stop()
print(json.dumps({"blocks": blocks, "events": status.events,
                  "uploaded": status.storage.get("uploaded")}))
"""

RULES = {
    "HOLMES_INTERVAL": "50ms",
    "HOLMES_CPU": "min=1,diff=1000,abs=1,cooldown=1h",
    "HOLMES_THREAD": "min=1,diff=1000,abs=2,cooldown=1h",
    "HOLMES_TASK": "min=1,diff=1000,abs=5,cooldown=1h",
    "HOLMES_MEM": "min=1,diff=1000,abs=1,cooldown=1h",
    "HOLMES_MEM_LIMIT": "64MiB",
    "HOLMES_GCHEAP": "off",
    "HOLMES_CPU_PROFILE_SECONDS": "1",
    "HOLMES_HEAP_SECONDS": "0.5",
}


def one_run(server: SeaweedFS, folder: Path, n: int) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOLMES_", "AWS_"))}
    env.update(server.env())
    env.update(RULES)
    env.update(PYTHONPATH=str(ROOT / "src"), HOLMES_DUMP_PATH=str(folder / f"dumps-{n}"))
    env["HOLMES_LOG_LEVEL"] = "WARNING"
    env["HOLMES_STORAGE"] = f"s3://{BUCKET}/run-{n}"
    proc = subprocess.run(
        [sys.executable, "-c", PROGRAM, str(ROOT)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"run {n} failed:\n{proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    longest: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="holmespy-bench-") as root:
        server = SeaweedFS(Path(root))
        server.start()
        try:
            server.bucket(BUCKET)
            for n in range(args.runs):
                result = one_run(server, Path(root), n)
                print(
                    f"run {n + 1}/{args.runs}: {result['events']} events,"
                    f" {result['uploaded']} uploaded, {len(result['blocks'])} guarded blocks",
                    flush=True,
                )
                per_run: dict[tuple[str, str], float] = {}
                for thread, where, seconds in result["blocks"]:
                    key = (thread, where)
                    per_run[key] = max(per_run.get(key, 0.0), seconds)
                for key, seconds in per_run.items():
                    longest.setdefault(key, []).append(seconds)
        finally:
            server.stop()
    rows = sorted(longest.items(), key=lambda item: -max(item[1]))
    print(f"\n{'thread':<18} {'where':<42} {'median ms':>10} {'max ms':>8} {'runs':>5}")
    for (thread, where), times in rows:
        ms = [t * 1000 for t in times]
        median = statistics.median(ms)
        print(f"{thread:<18} {where:<42} {median:>10.1f} {max(ms):>8.1f} {len(ms):>5}")
    ours = [max(t) for (thread, _), t in rows if thread.startswith("holmespy")]
    print(f"\nlongest block on holmespy's threads: {max(ours) * 1000:.1f} ms" if ours else "")
    if args.json is not None:
        args.json.write_text(
            json.dumps([{"thread": k[0], "where": k[1], "seconds": v} for k, v in rows], indent=1)
        )


if __name__ == "__main__":
    main()
