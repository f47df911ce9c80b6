"""Upload throughput: holmespy's uploader against `aws s3 cp --recursive`, same bundle, same server.

    python -m benchmarks.upload_throughput [--json PATH] [--reps 5]

Starts its own SeaweedFS on loopback (the test suite's starter), publishes
one ~50 MB event bundle, then uploads it alternately with holmespy's
uploader (from `notify()` to `flush()` returning, as in a running server) and
with the aws CLI of this venv (the whole command, as a person runs it), each
to a fresh prefix. Pairs alternate which goes first, so the machine's speed
changes hit both alike; the ratio (holmespy MB/s / aws MB/s) is taken per
pair and the median reported. Every upload is checked in the bucket (every
key, every size) before it counts.

The aws CLI pays for starting Python and importing botocore on each run; its
start-up (`aws --version`, measured in the same run) is reported too, with
the ratio against aws's transfer time alone.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from holmespy.bundle import BundleWriter, new_event_id, write_private
from holmespy.config import Config
from holmespy.storage.s3 import S3Store, Transfer
from holmespy.storage.s3client import S3Location
from holmespy.storage.uploader import Uploader
from tests.s3_server import SeaweedFS

BUCKET = "bench-uploads"
SERVICE = "bench"
# A heavy event: two large profiles and two text dumps, about 50 MB in all.
BUNDLE = {
    "heap.pb.gz": 30_000_000,
    "cpu.pb.gz": 15_000_000,
    "threads.txt": 3_000_000,
    "heap-types.txt": 2_000_000,
}


def make_files(folder: Path) -> None:
    """Random bytes (profiles are gzipped: incompressible), the same for both tools."""
    folder.mkdir(parents=True)
    for name, size in BUNDLE.items():
        (folder / name).write_bytes(os.urandom(size))


def publish(dumps: Path, files: Path) -> Path:
    event_id = new_event_id("mem")
    with BundleWriter(dumps, SERVICE, event_id) as bundle:
        for path in files.iterdir():
            write_private(bundle.temp / path.name, path.read_bytes())
        return bundle.publish({"id": event_id, "service": SERVICE, "rule": "mem"})


def stored_sizes(server: SeaweedFS, prefix: str) -> dict[str, int]:
    pages = server.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return {
        item["Key"].rsplit("/", 1)[1]: item["Size"]
        for page in pages
        for item in page.get("Contents", [])
    }


def run_holmespy(server: SeaweedFS, uploader: Uploader, dumps: Path, files: Path) -> float:
    folder = publish(dumps, files)
    started = time.perf_counter()
    uploader.notify(folder)
    if not uploader.flush(300):
        raise RuntimeError(f"holmespy did not deliver: {uploader.status()}")
    seconds = time.perf_counter() - started
    sizes = stored_sizes(server, f"holmespy/{SERVICE}/{folder.parent.name}/{folder.name}/")
    expected = {**BUNDLE, "event.json": sizes.get("event.json", -1)}
    if sizes != expected or sizes["event.json"] <= 0:
        raise RuntimeError(f"holmespy stored {sizes}, expected {expected}")
    return seconds


def run_aws(server: SeaweedFS, aws: str, files: Path, rep: int) -> float:
    prefix = f"aws/{rep}/"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AWS_")}, **server.env()}
    started = time.perf_counter()
    subprocess.run(
        [aws, "s3", "cp", "--recursive", "--quiet", str(files), f"s3://{BUCKET}/{prefix}"],
        env=env,
        check=True,
    )
    seconds = time.perf_counter() - started
    if stored_sizes(server, prefix) != BUNDLE:
        raise RuntimeError(f"aws stored {stored_sizes(server, prefix)}, expected {BUNDLE}")
    return seconds


def aws_startup(server: SeaweedFS, aws: str) -> float:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AWS_")}, **server.env()}
    started = time.perf_counter()
    subprocess.run([aws, "--version"], env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def measure(reps: int, transfer: Transfer) -> dict[str, object]:
    aws = str(Path(sys.executable).parent / "aws")
    if not Path(aws).exists():
        aws = shutil.which("aws") or "aws"
    total_mb = sum(BUNDLE.values()) / 1e6
    with tempfile.TemporaryDirectory(prefix="holmespy-bench-") as tmp:
        root = Path(tmp)
        server = SeaweedFS(root / "seaweedfs")
        server.start()
        saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("AWS_")}
        os.environ.update(server.env())
        try:
            server.bucket(BUCKET)
            files = root / "bundle"
            make_files(files)
            config = Config(
                dump_path=root / "spool", service=SERVICE, storage=f"s3://{BUCKET}/holmespy"
            )
            store = S3Store(S3Location.parse(f"s3://{BUCKET}/holmespy"), transfer=transfer)
            uploader = Uploader(config, store=store).start()
            uploader.flush(30)  # started and idle, its client made: a server's steady state
            run_holmespy(server, uploader, root / "spool", files)  # warm both paths once
            run_aws(server, aws, files, -1)
            ours, theirs, startup = [], [], []
            for rep in range(reps):
                if rep % 2 == 0:
                    ours.append(run_holmespy(server, uploader, root / "spool", files))
                    theirs.append(run_aws(server, aws, files, rep))
                else:
                    theirs.append(run_aws(server, aws, files, rep))
                    ours.append(run_holmespy(server, uploader, root / "spool", files))
                startup.append(aws_startup(server, aws))
            uploader.stop(5)
        finally:
            for name in server.env():
                os.environ.pop(name, None)
            os.environ.update(saved)
            server.stop()
    ratios = [t / o for o, t in zip(ours, theirs, strict=True)]
    transfer_only = [(t - s) / o for o, t, s in zip(ours, theirs, startup, strict=True) if t > s]
    return {
        "bundle_mb": total_mb,
        "files": len(BUNDLE),
        "reps": reps,
        "part_size_mib": transfer.part_size / (1 << 20),
        "concurrency": transfer.concurrency,
        "multipart_threshold_mib": transfer.multipart_threshold / (1 << 20),
        "holmespy_s": statistics.median(ours),
        "aws_s": statistics.median(theirs),
        "aws_startup_s": statistics.median(startup),
        "holmespy_mb_s": total_mb / statistics.median(ours),
        "aws_mb_s": total_mb / statistics.median(theirs),
        "ratio": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "ratio_vs_aws_transfer_only": statistics.median(transfer_only) if transfer_only else None,
        "pairs": [{"holmespy_s": o, "aws_s": t} for o, t in zip(ours, theirs, strict=True)],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--reps", type=int, default=5, help="pairs of uploads (default 5)")
    defaults = Transfer()
    parser.add_argument("--part-size-mib", type=int, default=defaults.part_size >> 20)
    parser.add_argument("--concurrency", type=int, default=defaults.concurrency)
    parser.add_argument("--threshold-mib", type=int, default=defaults.multipart_threshold >> 20)
    args = parser.parse_args()
    transfer = Transfer(
        multipart_threshold=args.threshold_mib << 20,
        part_size=args.part_size_mib << 20,
        concurrency=args.concurrency,
    )
    result = measure(args.reps, transfer)
    print(f"bundle {result['bundle_mb']:.0f} MB in {result['files']} files, {args.reps} pairs")
    print(
        f"holmespy  {result['holmespy_mb_s']:6.1f} MB/s  (median {result['holmespy_s']:.2f} s; "
        f"parts {args.part_size_mib} MiB x {args.concurrency})"
    )
    print(
        f"aws s3 cp {result['aws_mb_s']:6.1f} MB/s  (median {result['aws_s']:.2f} s, "
        f"of which start-up {result['aws_startup_s']:.2f} s)"
    )
    print(
        f"ratio holmespy/aws: {result['ratio']:.2f} (pairs {result['ratio_min']:.2f}..."
        f"{result['ratio_max']:.2f}); against aws's transfer alone: "
        f"{result['ratio_vs_aws_transfer_only']:.2f}"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
