"""`holmespy ls` over 10,000 events in S3 (a local SeaweedFS), against bare boto3 listings.

    python -m benchmarks.cli_ls [--events 10000] [--repeat 5] [--json PATH]

Starts its own SeaweedFS (the tests' starter), fills a bucket with small
events laid out as the uploader writes them (`<prefix>/<service>/<day>/
<event-id>/{event.json,threads.txt}`, 3 services over 10 days), then times,
interleaved in each repetition so the machine's speed swings hit all alike:

- `holmespy ls` as the installed console script: what the on-call engineer
  waits for, interpreter start-up and boto3 import included (goal: <= 3 s);
- the same `main(["ls", ...])` inside this process, start-up excluded;
- baseline "naive": a boto3 paginator over every key under the prefix, the
  listing a script written without the key layout in mind would do;
- baseline "delimited": the bare boto3 requests `ls` itself needs (services,
  days, then each day's event prefixes, one after the other), with no CLI
  around them;
- `holmespy ls -l -n 50` and `holmespy ls --json -n 1000`, which read
  `event.json` of each event shown (50 and 1,000 GETs).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from holmespy.bundle import new_event_id
from holmespy.cli import main as holmespy_main
from holmespy.storage.s3client import make_client
from tests.s3_server import SeaweedFS

BUCKET = "bench"
PREFIX = "prod/holmes"
SERVICES = ("api", "worker", "gateway")
DAYS = 10
GOAL_SECONDS = 3.0


def seed(client: Any, events: int) -> float:
    """Put `events` small events spread over the last DAYS days; returns seconds taken."""
    now = dt.datetime.now(dt.UTC)
    rules = ("cpu", "mem", "thread", "task", "gcheap")

    def put(n: int) -> None:
        when = now - dt.timedelta(seconds=n * DAYS * 86400 / events)
        rule = rules[n % len(rules)]
        service = SERVICES[n % len(SERVICES)]
        event_id = new_event_id(rule, when)
        base = f"{PREFIX}/{service}/{when:%Y-%m-%d}/{event_id}/"
        event = {"id": event_id, "service": service, "host": f"host-{n % 7}", "rule": rule}
        client.put_object(Bucket=BUCKET, Key=base + "threads.txt", Body=b"Thread MainThread\n")
        client.put_object(Bucket=BUCKET, Key=base + "event.json", Body=json.dumps(event).encode())

    began = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, range(events)))
    return time.monotonic() - began


def naive_listing(client: Any) -> int:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=PREFIX + "/")
    return sum(len(page.get("Contents", [])) for page in pages)


def delimited_listing(client: Any) -> int:
    def below(prefix: str) -> list[str]:
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=BUCKET, Prefix=prefix, Delimiter="/"
        )
        return [p["Prefix"] for page in pages for p in page.get("CommonPrefixes", [])]

    return sum(len(below(day)) for service in below(PREFIX + "/") for day in below(service))


def script(*argv: str, env: dict[str, str]) -> str:
    exe = shutil.which("holmespy", path=str(Path(sys.executable).parent))
    assert exe, "the holmespy console script is not installed (pip install -e .)"
    proc = subprocess.run(
        [exe, *argv], env=env, capture_output=True, text=True, timeout=300, check=True
    )
    return proc.stdout


def in_process(*argv: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert holmespy_main(list(argv)) == 0
    return out.getvalue()


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    began = time.perf_counter()
    result = fn()
    return time.perf_counter() - began, result


def measure(events: int, repeat: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="holmespy-bench-") as root:
        server = SeaweedFS(Path(root))
        server.start()
        try:
            os.environ.update(server.env())
            env = {k: v for k, v in os.environ.items() if not k.startswith("HOLMES_")}
            client = make_client()
            server.bucket(BUCKET)
            print(f"seeding {events:,} events into SeaweedFS ...", flush=True)
            seed_seconds = seed(client, events)
            url = f"s3://{BUCKET}/{PREFIX}"
            runs: dict[str, Callable[[], Any]] = {
                "ls (console script)": lambda: script("ls", "--from", url, env=env),
                "ls (main in-process)": lambda: in_process("ls", "--from", url),
                "baseline: boto3 paginator, every key": lambda: naive_listing(client),
                "baseline: boto3 delimited, sequential": lambda: delimited_listing(client),
                "ls -l -n 50 (50 GETs)": lambda: script(
                    "ls", "-l", "-n", "50", "--from", url, env=env
                ),
                "ls --json -n 1000 (1,000 GETs)": lambda: script(
                    "ls", "--json", "-n", "1000", "--from", url, env=env
                ),
            }
            times: dict[str, list[float]] = {name: [] for name in runs}
            for _ in range(repeat):
                for name, run in runs.items():
                    seconds, result = timed(run)
                    times[name].append(seconds)
                    check(name, result, events)
        finally:
            server.stop()
    script_median = statistics.median(times["ls (console script)"])
    return {
        "events": events,
        "repeat": repeat,
        "seed_seconds": round(seed_seconds, 1),
        "seconds": {
            name: {
                "median": round(statistics.median(ts), 3),
                "min": round(min(ts), 3),
                "max": round(max(ts), 3),
            }
            for name, ts in times.items()
        },
        "goal_seconds": GOAL_SECONDS,
        "goal_met": script_median <= GOAL_SECONDS,
    }


def check(name: str, result: Any, events: int) -> None:
    """Every run must have seen every event, or its time means nothing."""
    if name.startswith("ls ("):
        assert len(result.splitlines()) == events + 1, f"{name}: {len(result.splitlines())} lines"
    elif "every key" in name:
        assert result == 2 * events, f"{name}: {result} keys"
    elif "delimited" in name:
        assert result == events, f"{name}: {result} events"
    elif "--json" in name:
        assert len(json.loads(result)) == 1000
    else:
        assert len(result.splitlines()) == 51


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    result = measure(args.events, args.repeat)
    print(
        f"\n{result['events']:,} events (seeded in {result['seed_seconds']} s),"
        f" {result['repeat']} interleaved runs each, seconds:"
    )
    print(f"  {'':42} {'median':>7} {'min':>7} {'max':>7}")
    for name, figures in result["seconds"].items():
        print(f"  {name:42} {figures['median']:7.2f} {figures['min']:7.2f} {figures['max']:7.2f}")
    ls = result["seconds"]["ls (console script)"]["median"]
    naive = result["seconds"]["baseline: boto3 paginator, every key"]["median"]
    bare = result["seconds"]["baseline: boto3 delimited, sequential"]["median"]
    print(
        f"\nholmespy ls: {ls:.2f} s (goal <= {GOAL_SECONDS:.0f} s:"
        f" {'met' if result['goal_met'] else 'MISSED'}); {naive / ls:.1f}x faster than listing"
        f" every key, {ls / bare:.1f}x the bare delimited requests"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
