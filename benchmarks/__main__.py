"""Run every benchmark in one go: `python -m benchmarks [--json results.json]`.

Each benchmark prints its own table of ratios against a baseline measured in
the same run; this entry point runs them one after the other (never in
parallel: they would measure each other) and gathers their figures.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

BENCHMARKS = ("tick_cost", "capture_cost", "heap_pause")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--only", choices=BENCHMARKS, action="append")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only or BENCHMARKS:
            print(f"\n== {name} ==", flush=True)
            out = Path(tmp) / f"{name}.json"
            subprocess.run(
                [sys.executable, "-m", f"benchmarks.{name}", "--json", str(out)], check=True
            )
            results[name] = json.loads(out.read_text())
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
