"""Summarize the figures `tests/test_servers.py` records, as the table in docs/servers.md.

export HOLMESPY_TEST_TIMINGS=/tmp/t.jsonl; rm -f $HOLMESPY_TEST_TIMINGS
for i in 1 2 3; do python -m pytest -q tests/test_servers.py; done
python tests/servers/timings.py $HOLMESPY_TEST_TIMINGS
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict


def main(path: str) -> None:
    figures: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    with open(path, encoding="utf-8") as rows:
        for line in rows:
            row = json.loads(line)
            for key, value in row.items():
                if key.endswith("_s"):
                    figures[(row["server"], row["what"], key[:-2])].append(value)
    print("| server | case | figure | median | range | runs |")
    print("|---|---|---|---|---|---|")
    for (server, what, figure), values in figures.items():
        low, high = min(values), max(values)
        median = statistics.median(values)
        print(
            f"| {server} | {what} | {figure} | {median:.2f} s | {low:.2f} to {high:.2f} s |"
            f" {len(values)} |"
        )


if __name__ == "__main__":
    main(sys.argv[1])
