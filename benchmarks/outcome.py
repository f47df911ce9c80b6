"""How a benchmark that could not measure says so, instead of crashing.

A benchmark raises `NotMeasured` (the proxy rig's `RigError` is one) when the
machine did not give it what it measures in: a tool missing, a server that
did not start or answer, rules that never warmed up, no quiet baseline
window. `python -m benchmarks.X` then writes `{"not_measured": why}` as its
JSON, prints why, and exits 0; the summary shows it as a row. A traceback
(a bug in the benchmark or in holmespy) still exits non-zero: that is a crash.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

NOT_MEASURED = "not_measured"


class NotMeasured(Exception):
    """The benchmark ran to its end without the figure; the message says why."""


class NotSteady(NotMeasured):
    """The state the benchmark measures in never came (rules warm, a window without a capture)."""


def report(path: Path | None, exc: NotMeasured) -> None:
    print(f"\nnot measured: {exc}", file=sys.stderr, flush=True)
    if path is not None:
        path.write_text(json.dumps({NOT_MEASURED: str(exc)}, indent=2) + "\n")
