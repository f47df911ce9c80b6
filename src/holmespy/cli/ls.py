"""`holmespy ls`: events newest first, as a table or `--json`."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from typing import Any

from holmespy.cli.errors import BadUsage
from holmespy.cli.source import LocalSource, resolve_source
from holmespy.config import parse_duration
from holmespy.errors import ConfigError


def add_parser(sub: Any) -> None:
    p = sub.add_parser("ls", help="list events, newest first")
    p.add_argument("--from", dest="source", metavar="SRC", help="dump folder")
    p.add_argument("--service", help="only this service")
    p.add_argument("--rule", choices=("cpu", "mem", "thread", "task", "gcheap"))
    p.add_argument("--host", help="only this host")
    p.add_argument("--since", metavar="AGE", help="only events newer than AGE (e.g. 30m, 1h)")
    p.add_argument("--json", action="store_true", help="print a JSON array of event.json objects")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    source = LocalSource(resolve_source(args.source))
    cutoff = None
    if args.since:
        try:
            age = parse_duration("--since", args.since)
        except ConfigError as exc:
            raise BadUsage(str(exc)) from None
        cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=age)
    events = []
    for item in source.events(args.service):
        e = item.event
        if (args.rule and e.get("rule") != args.rule) or (args.host and e.get("host") != args.host):
            continue
        if cutoff and _time(e) < cutoff:
            continue
        events.append(e)
    events.sort(key=lambda e: str(e.get("id", "")), reverse=True)
    if args.json:
        json.dump(events, sys.stdout, indent=2)
        print()
    else:
        print(render_table(events))
    return 0


def _time(event: dict[str, Any]) -> dt.datetime:
    try:
        return dt.datetime.fromisoformat(str(event["time"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return dt.datetime.min.replace(tzinfo=dt.UTC)


def render_table(events: list[dict[str, Any]]) -> str:
    if not events:
        return "no events"
    header = ("TIME (UTC)", "SERVICE", "RULE", "VALUE", "HOST", "PID", "EVENT ID")
    rows: list[tuple[str, ...]] = [header]
    for e in events:
        value = e.get("value")
        unit = e.get("unit", "")
        shown = (
            f"{value:.1f}{unit}" if unit == "%" and isinstance(value, float) else f"{value} {unit}"
        )
        time = str(e.get("time", "?"))[:19].replace("T", " ")
        rule = e.get("rule", "corrupt" if "corrupt" in e else "?")
        row = (time, e.get("service", "?"), rule, shown, e.get("host", "?"), e.get("pid"), e["id"])
        rows.append(tuple(str(x) for x in row))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )
