"""`holmespy ls`: events newest first, as a table for people or `--json` for scripts.

The default table has only what event ids and folder names say (time, age,
service, rule, id), so it costs one listing request per 1,000 events and
nothing per event: reading each `event.json` from S3 costs ~2 ms of the S3
client's CPU per event, 20 s for 10,000. `-l` adds host, pid, value and files from
`event.json`, and `--json` prints the `event.json` objects themselves; both
read them concurrently, so combine them with filters or `-n` on big buckets.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from typing import Any

from holmespy.cli.events import (
    Loaded,
    Query,
    add_filter_args,
    event_time,
    filter_host,
    load_events,
    select,
)
from holmespy.cli.source import EventRef, resolve_source
from holmespy.cli.text import CELL_WIDTH, age, field, number, positive_int, table, warn
from holmespy.event import Event

MAX_FILES = 20
"""File names listed in the FILES column of `ls -l` at most."""


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "ls",
        help="list events, newest first",
        description="List events, newest first, from a dump folder or S3.",
    )
    add_filter_args(p)
    p.add_argument("-n", "--limit", type=positive_int, metavar="N", help="only the N newest events")
    p.add_argument(
        "-l",
        "--long",
        action="store_true",
        help="add host, pid, value and files (reads event.json)",
    )
    p.add_argument("--json", action="store_true", help="print a JSON array of event.json objects")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    now = dt.datetime.now(dt.UTC)
    query = Query.from_args(args, now)
    source = resolve_source(args.source, args.timeout)
    refs = select(source, query, limit=args.limit)
    loaded: list[Loaded] | None = None
    if args.json or args.long or query.host:
        loaded = filter_host(load_events(source, refs), query.host)[: args.limit]
        for item in loaded:
            if item.error:
                warn(item.error)
    if args.json:
        events = [item.event for item in loaded or () if not item.error]
        json.dump(events, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    if loaded is not None:
        refs = [item.ref for item in loaded]
    if not refs:
        warn(f"no events in {source.url} match")
        return 0
    details = {item.ref: item for item in loaded} if args.long and loaded is not None else None
    sys.stdout.write(render_table(refs, now, details) + "\n")
    return 0


def render_table(
    refs: list[EventRef], now: dt.datetime, details: dict[EventRef, Loaded] | None = None
) -> str:
    header = ["TIME (UTC)", "AGE", "SERVICE", "RULE", "EVENT ID"]
    if details is not None:
        header[4:4] = ["VALUE", "HOST", "PID", "FILES"]
    rows = [header]
    for ref in refs:
        when = event_time(ref.id)
        row = [
            when.strftime("%Y-%m-%d %H:%M:%S") if when else "?",
            age(now - when) if when else "?",
            ref.service,
            ref.rule,
            ref.id,
        ]
        if details is not None:
            row[4:4] = _long_columns(details[ref])
        rows.append(row)
    return table(rows, right={"AGE", "VALUE", "PID"})


def _long_columns(item: Loaded) -> list[str]:
    if item.error:
        return ["(corrupt event.json)", "", "", ""]
    e, _ = Event.read(item.event)  # a value of a wrong type is shown as "?"
    unit = e.unit or ""
    shown = (
        number(e.value) + ("%" if unit == "%" else f" {unit}" if unit else "")
        if e.value is not None
        else "?"
    )
    names = e.file_names
    files = ",".join(field(name, CELL_WIDTH) for name in names[:MAX_FILES])
    if len(names) > MAX_FILES:
        files += f",… ({len(names)} files)"
    pid = "?" if e.pid is None else str(e.pid)
    return [shown, e.host if e.host is not None else "?", pid, files or "-"]
