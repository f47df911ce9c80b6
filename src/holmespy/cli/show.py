"""`holmespy show EVENT_ID`: why it fired, what led there, and what the dumps say."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from holmespy.cli.source import LocalSource, resolve_source

SPARKS = "▁▂▃▄▅▆▇█"
PREVIEW_LINES = 25


def add_parser(sub: Any) -> None:
    p = sub.add_parser("show", help="reason, metric history and the top of each dump")
    p.add_argument("event_id", metavar="EVENT_ID", help="an event id (a unique prefix will do)")
    p.add_argument("--from", dest="source", metavar="SRC", help="dump folder")
    p.add_argument("-n", "--lines", type=int, default=PREVIEW_LINES, help="lines shown per dump")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    found = LocalSource(resolve_source(args.source)).find(args.event_id)
    print(render(found.event, found.path, args.lines))
    return 0


def render(event: dict[str, Any], path: Path, lines: int = PREVIEW_LINES) -> str:
    if "corrupt" in event:
        return f"{path}: {event['corrupt']}"
    unit = event.get("unit", "")
    th = event.get("thresholds", {})
    out = [
        f"event    {event.get('id')}",
        f"service  {event.get('service')} on {event.get('host')}, pid {event.get('pid')}",
        f"time     {event.get('time')}",
        f"rule     {event.get('rule')} = {_num(event.get('value'))}{_unit(unit)}",
        f"reason   {event.get('reason')}",
        "rule     "
        + ", ".join(
            f"{k}={_num(th[k])}" for k in ("min", "diff", "abs", "max") if th.get(k) is not None
        ),
        f"folder   {path}",
    ]
    values = [
        h["value"] for h in event.get("history", []) if isinstance(h.get("value"), int | float)
    ]
    if values:
        out.append(
            f"history  {sparkline(values)}  {_num(min(values))} .. {_num(max(values))}{_unit(unit)}"
        )
    for f in event.get("files", []):
        name = f.get("name", "?")
        out.append("")
        out.append(f"── {name} ({f.get('size', '?')} bytes) " + "─" * max(0, 50 - len(name)))
        file = path / name
        if name.endswith(".txt") and file.is_file():
            text = file.read_text(errors="replace").splitlines()
            out.extend(text[:lines])
            if len(text) > lines:
                out.append(f"… {len(text) - lines} more lines in {file}")
    for name, facts in event.get("captures", {}).items():
        if "error" in facts:
            out.append(f"!! {name} capture failed: {facts['error']}")
    return "\n".join(out)


def sparkline(values: list[float]) -> str:
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    return "".join(SPARKS[min(7, int((v - low) / span * 7.999))] for v in values)


def _num(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.1f}" if not value.is_integer() else str(int(value))
    return str(value)


def _unit(unit: str) -> str:
    return unit if unit == "%" else f" {unit}"
