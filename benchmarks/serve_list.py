"""`holmespy serve`'s event list over 10,000 events, in a folder and in S3 (a local SeaweedFS).

    python -m benchmarks.serve_list [--events 10000] [--repeat 5] [--no-s3] [--json PATH]

Seeds small events laid out as the watcher and the uploader write them (3
services over 10 days, `event.json` and `threads.txt` each), starts the
verb's own `Server` on a free loopback port, and times real HTTP GETs of:
the first page, the last page (paging through every event), a rule filter,
and a host filter (which reads every `event.json`, as `ls --host` does). It
also reports the page weight: bytes of the list page, of an event page with
a CPU profile, and of the two assets every page loads.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import statistics
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from benchmarks.cli_ls import BUCKET, DAYS, PREFIX, SERVICES, seed
from holmespy.bundle import new_event_id
from holmespy.cli.reading import DEFAULT_MAX_SIZE
from holmespy.cli.serve import Server
from holmespy.cli.site import PAGE_SIZE
from holmespy.cli.source import LocalSource, S3Source, Source
from holmespy.storage.s3client import make_client
from tests.s3_server import SeaweedFS

RULES = ("cpu", "mem", "thread", "task", "gcheap")


def seed_folder(root: Path, events: int) -> None:
    now = dt.datetime.now(dt.UTC)
    for n in range(events):
        when = now - dt.timedelta(seconds=n * DAYS * 86400 / events)
        rule, service = RULES[n % len(RULES)], SERVICES[n % len(SERVICES)]
        event_id = new_event_id(rule, when)
        folder = root / service / f"{when:%Y-%m-%d}" / event_id
        folder.mkdir(parents=True)
        event = {"id": event_id, "service": service, "host": f"host-{n % 7}", "rule": rule}
        (folder / "event.json").write_text(json.dumps(event))
        (folder / "threads.txt").write_text("Thread MainThread\n")


@contextlib.contextmanager
def serving(source: Source) -> Iterator[str]:
    server = Server(("127.0.0.1", 0), source, 60, DEFAULT_MAX_SIZE)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=600) as reply:
        data: bytes = reply.read()
        return data


def timed(call: Callable[[], object], repeat: int) -> dict[str, float]:
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        call()
        times.append(time.perf_counter() - began)
    return {"median": statistics.median(times), "min": min(times), "max": max(times)}


def measure(base: str, events: int, repeat: int) -> dict[str, Any]:
    last = (events + PAGE_SIZE - 1) // PAGE_SIZE
    pages = {
        "first page": "/",
        f"last page ({last})": f"/?page={last}",
        "rule=cpu": "/?rule=cpu",
        "host=host-3 (reads every event.json)": "/?host=host-3",
    }
    out: dict[str, Any] = {}
    for name, path in pages.items():
        out[name] = timed(lambda path=path: get(base + path), 1 if "host" in name else repeat)
        print(f"  {name:40} median {out[name]['median'] * 1000:8.1f} ms", flush=True)
    out["list page bytes"] = len(get(base + "/"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-s3", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results: dict[str, Any] = {"events": args.events}
    with tempfile.TemporaryDirectory() as root:
        folder = Path(root) / "dumps"
        print(f"seeding {args.events:,} events into a folder ...", flush=True)
        seed_folder(folder, args.events)
        print("local folder:", flush=True)
        with serving(LocalSource(folder)) as base:
            results["folder"] = measure(base, args.events, args.repeat)
        if not args.no_s3:
            server = SeaweedFS(Path(root) / "weed")
            server.start()
            try:
                os.environ.update(server.env())
                server.bucket(BUCKET)
                print(f"seeding {args.events:,} events into SeaweedFS ...", flush=True)
                seed(make_client(), args.events)
                print("S3 (SeaweedFS):", flush=True)
                with serving(S3Source(f"s3://{BUCKET}/{PREFIX}", 60)) as base:
                    results["s3"] = measure(base, args.events, args.repeat)
            finally:
                server.stop()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
