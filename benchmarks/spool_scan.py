"""What it costs the uploader to look at its spool: one scan over N real bundles.

    python -m benchmarks.spool_scan [--events 1000]

A scan opens every event folder by descriptor, checks each file's kind, size
and owner, and parses each event.json it has not seen before (a parsed
manifest is remembered by its event.json's inode, size and times). "first" is
the scan of a spool it has never seen; "again" the scans after it, which is
what each upload pass and each retry costs. Times are this thread's CPU time
(`thread_time`), which other processes on the machine do not inflate.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from holmespy.bundle import BundleWriter, new_event_id, write_private
from holmespy.storage.spool import Spool


def fill(root: Path, events: int) -> None:
    """`events` bundles shaped like a thread event: a stack dump and a small profile."""
    for _ in range(events):
        event_id = new_event_id("thread")
        with BundleWriter(root, "svc", event_id) as bundle:
            write_private(bundle.directory / "threads.txt", b"x" * 4000)
            write_private(bundle.directory / "cpu.pb.gz", os.urandom(40_000))
            history = [{"time": f"t{n}", "value": n} for n in range(10)]
            bundle.publish({"id": event_id, "service": "svc", "history": history})


def cpu_seconds(spool: Spool) -> float:
    start = time.thread_time()
    spool.scan()
    return time.thread_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "dumps"
        fill(root, args.events)
        spool = Spool(root, 1 << 40)
        first = cpu_seconds(spool)
        again = statistics.median(cpu_seconds(spool) for _ in range(args.repeat))
    per = 1e6 / args.events
    print(f"scan of {args.events} events, CPU time:")
    print(f"  first  {first * 1e3:7.1f} ms  ({first * per:5.1f} µs per event)")
    print(f"  again  {again * 1e3:7.1f} ms  ({again * per:5.1f} µs per event, median)")


if __name__ == "__main__":
    main()
