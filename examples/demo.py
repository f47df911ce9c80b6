"""The demo behind `make demo`: real failures, real dumps, shown with the CLI.

Runs six example programs (each adds only `import holmespy; holmespy.start()`)
with HOLMES_DUMP_PATH=holmes-dumps, then lists the events they wrote and shows
each one. Takes about 30 seconds.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DUMPS = ROOT / "holmes-dumps"
PROGRAMS = [
    "thread_leak.py",
    "task_pileup.py",
    "cpu_spike.py",
    "blocked_loop.py",
    "loop_sleep.py",
    "mem_leak.py",
]


def main() -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOLMES_")}
    env.update(HOLMES_DUMP_PATH=str(DUMPS), HOLMES_SERVICE="demo", HOLMES_LOG_LEVEL="WARNING")
    for program in PROGRAMS:
        print(f"\n$ python examples/{program}", flush=True)
        subprocess.run([sys.executable, str(ROOT / "examples" / program)], env=env, check=True)
    holmespy = [sys.executable, "-m", "holmespy"]
    print(f"\n$ holmespy ls --from {DUMPS.name} --service demo --since 2m", flush=True)
    listing = subprocess.run(
        [*holmespy, "ls", "--from", str(DUMPS), "--service", "demo", "--since", "2m", "--json"],
        check=True,
        capture_output=True,
        text=True,
    )
    subprocess.run(
        [*holmespy, "ls", "--from", str(DUMPS), "--service", "demo", "--since", "2m"], check=True
    )
    import json

    for event in reversed(json.loads(listing.stdout)):
        print(f"\n$ holmespy show {event['id']} -n 12", flush=True)
        subprocess.run(
            [*holmespy, "show", event["id"], "--from", str(DUMPS), "-n", "12"], check=True
        )
    print(f"\nEvery bundle is under {DUMPS}/demo/<date>/<event-id>/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
