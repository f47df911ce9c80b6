"""`holmespy top FILE`: the hottest functions of a pprof profile, like `go tool pprof -top`.

`self` is what a function spent in its own code (it was the innermost
frame), `cum` what it spent including its callees. Any `.pb.gz` works: a
holmespy CPU or heap profile, or one from Go or py-spy.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from holmespy.cli.profiles import FunctionCost, column, describe, hottest, load
from holmespy.cli.reading import add_max_size_arg
from holmespy.cli.text import field, percent, positive_int, quantity, table


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "top",
        help="hottest functions of a profile",
        description="Hottest functions of a pprof profile (.pb.gz), by self and cumulative value.",
    )
    p.add_argument("file", type=Path, metavar="FILE", help="a pprof profile (.pb.gz)")
    p.add_argument(
        "-n", "--count", type=positive_int, default=20, metavar="N", help="rows (default 20)"
    )
    p.add_argument(
        "-i", "--sample-type", metavar="TYPE", help="which values, e.g. inuse_objects, samples"
    )
    p.add_argument("--cum", action="store_true", help="sort by cumulative value")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_max_size_arg(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    profile = load(args.file, args.max_size)
    index = column(profile, args.sample_type)
    rows, total = hottest(profile, index)
    if args.cum:
        rows.sort(key=lambda r: (-r.cum, -r.self, r.function))
    rows = rows[: args.count]
    unit = profile.sample_types[index].unit
    if args.json:
        json.dump(
            as_json(args.file, profile.sample_types[index].type, unit, rows, total), sys.stdout
        )
        sys.stdout.write("\n")
        return 0
    print(f"{field(args.file)}: {field(describe(profile, index))}; total {quantity(total, unit)}")
    if not rows:
        print("no samples with a value: nothing to show")
        return 0
    print(render(rows, total, unit))
    return 0


def render(rows: list[FunctionCost], total: int, unit: str) -> str:
    lines = [["self", "self%", "sum%", "cum", "cum%", "function", "file"]]
    running = 0
    for row in rows:
        running += row.self
        lines.append(
            [
                quantity(row.self, unit),
                percent(row.self, total),
                percent(running, total),
                quantity(row.cum, unit),
                percent(row.cum, total),
                row.function,
                row.filename,
            ]
        )
    return table(lines, right={"self", "self%", "sum%", "cum", "cum%"})


def as_json(
    path: Path, sample_type: str, unit: str, rows: list[FunctionCost], total: int
) -> dict[str, Any]:
    return {
        "file": str(path),
        "sample_type": sample_type,
        "unit": unit,
        "total": total,
        "functions": [
            {
                "function": r.function,
                "file": r.filename,
                "self": r.self,
                "cum": r.cum,
                "self_percent": round(100.0 * r.self / total, 2) if total else 0.0,
                "cum_percent": round(100.0 * r.cum / total, 2) if total else 0.0,
            }
            for r in rows
        ],
    }
