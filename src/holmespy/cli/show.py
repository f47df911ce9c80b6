"""`holmespy show EVENT_ID`: why it fired, what led there, and what the dumps say.

One screen for the on-call engineer: the rule and its numbers, the metric
history as a chart with the line it crossed, the hottest functions of each
profile (and, for the gcheap pair, the sites that grew between the two),
the biggest groups of threads and tasks stopped in the same place, the
types with the most live objects or the fastest growth, and the roots that
hold the most memory. Each part reads one
file; a missing or corrupt file is reported in its place and the rest is
still shown.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeGuard

from holmespy.bundle import EVENT_FILE
from holmespy.census import Census
from holmespy.cli.chart import bar_chart
from holmespy.cli.diff import DEFAULT_TYPE, site_changes
from holmespy.cli.dumps import (
    TWINS,
    Dump,
    StackGroup,
    blocked_lines,
    load_dump_at,
    task_groups,
    thread_groups,
)
from holmespy.cli.errors import BadUsage, CLIError, UnsafePath
from holmespy.cli.events import Query, add_filter_args, parse_event
from holmespy.cli.fetch import open_bundle
from holmespy.cli.holders import holders_part
from holmespy.cli.profiles import hottest, load
from holmespy.cli.reading import (
    DEFAULT_MAX_SIZE,
    EVENT_JSON_MAX,
    add_max_size_arg,
    read_bytes,
    read_member,
)
from holmespy.cli.source import EventRef, member_path
from holmespy.cli.text import (
    CELL_WIDTH,
    field,
    number,
    percent,
    plural,
    positive_int,
    quantity,
    signed,
    size,
    table,
)
from holmespy.event import Event, Point, Thresholds
from holmespy.formats.collapsed import sample_index
from holmespy.heapholders import HeapHolders
from holmespy.registry import RULES
from holmespy.stackdump import ThreadDump
from holmespy.taskdump import TaskDump

FRAMES_SHOWN = 6
NAMES_SHOWN = 10
"""Missing files or blocked loops named before the rest are only counted."""
WIDE = CELL_WIDTH
"""Characters of one field from the bundle (a reason, an error) shown at most."""
MAX_BARS = 60
"""Bars of the history chart at most (a real history has 11 samples)."""
MAX_VALUE = 1e15
"""The largest metric value charted: a percentage or a count beyond it is not a real one."""


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "show",
        help="reason, metric history, top frames of each profile",
        description="Why an event fired, the metric history, and the top of each dump.",
    )
    p.add_argument(
        "event_id", nargs="?", metavar="EVENT_ID", help="an event id, a unique prefix, or a folder"
    )
    p.add_argument("--latest", action="store_true", help="the newest event matching the filters")
    add_filter_args(p)
    p.add_argument(
        "-n", "--top", type=positive_int, default=5, metavar="N", help="rows per part (default 5)"
    )
    add_max_size_arg(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if (args.event_id is None) == (not args.latest):
        raise BadUsage("show takes an EVENT_ID (or a bundle folder) or --latest")
    query = Query.from_args(args)
    with open_bundle(args.event_id, args.source, query, timeout=args.timeout) as (folder, where):
        print(render(folder, where, args.top, args.max_size))
    return 0


def render(folder: Path, where: str, top: int = 5, max_size: int = DEFAULT_MAX_SIZE) -> str:
    """The whole page; each file read within `max_size` (see `holmespy.cli.reading`)."""
    event_file = folder / EVENT_FILE
    if not event_file.is_file():
        raise CLIError(f"{folder}: not an event bundle (it has no {EVENT_FILE})")
    data = read_bytes(event_file, EVENT_JSON_MAX)
    loaded = parse_event(EventRef("", "", folder.name), data)
    if loaded.error:
        raise CLIError(f"{where}: {loaded.error}")
    event, problems = Event.read(loaded.event)  # an object: parse_event refused the rest
    out = header(event, where)
    out += history(event)
    out += [f"!! {EVENT_FILE}: {field(problem, 2 * WIDE)}" for problem in problems[:NAMES_SHOWN]]
    if len(problems) > NAMES_SHOWN:
        out.append(f"!! {EVENT_FILE}: and {len(problems) - NAMES_SHOWN} more values left out")
    if event.partial:
        out.append(
            f"!! partial: {field(event.partial_reason or 'captures were cut short', 4 * WIDE)}"
        )
    cpu = event.capture("cpu")
    if cpu is not None and cpu.engine:
        out.append(f"cpu      profiled by {field(cpu.engine)}: {field(cpu.why or '')}".rstrip(": "))
    for name, facts in (event.captures or {}).items():
        if facts.error:
            out.append(f"!! {field(name)} capture failed: {field(facts.error, 2 * WIDE)}")
    loop_capture = event.capture("loop")
    stall_facts = loop_capture.facts.get("stalls") if loop_capture is not None else None
    recorder_capture = event.capture("recorder")
    recorder_facts = recorder_capture.facts if recorder_capture is not None else {}
    parts: list[tuple[str, Callable[[Path, int, int], list[str]]]] = [
        ("loop.txt", lambda path, n, size: loop_part(path, n, size, stall_facts)),
        ("loop.pb.gz", profile_part),
        ("cpu.pb.gz", profile_part),
        ("heap.pb.gz", profile_part),
        ("heap-2.pb.gz", profile_part),
        *((name, dump_part) for name in TWINS),
        ("recorder.pb.gz", lambda path, n, size: recorder_part(path, n, size, recorder_facts)),
    ]
    for name, part in parts:
        path = folder / name
        if not path.is_file():
            continue
        out.append("")
        try:
            out += part(path, top, max_size)
        except CLIError as exc:
            out.append(section(name, "cannot be read"))
            out.append(f"!! {field(str(exc), 2 * WIDE)}")
        if name == "heap-2.pb.gz" and (folder / "heap.pb.gz").is_file():
            out.append("")
            out += grew_part(folder, top, max_size)
    names = event.file_names
    missing = [name for name in names if not _present(folder, name)]
    if missing:
        out.append("")
        shown = ", ".join(field(name) for name in missing[:NAMES_SHOWN])
        more = f" and {len(missing) - NAMES_SHOWN} more" if len(missing) > NAMES_SHOWN else ""
        out.append(f"!! listed in {EVENT_FILE} but missing: {shown}{more}")
    return "\n".join(out)


def _present(folder: Path, name: object) -> bool:
    """Whether a file `event.json` lists is in the folder (a name that is not a plain
    file name of the bundle, or not a string, never is)."""
    if not isinstance(name, str):
        return False
    try:
        return folder.joinpath(*member_path(name).parts).is_file()
    except (UnsafePath, OSError, ValueError):
        return False


def header(event: Event, where: str) -> list[str]:
    rule = event.rule or "?"
    unit = event.unit or ""
    th = event.thresholds or Thresholds()
    versions = event.versions
    out = [
        f"event    {field(event.id or '?')}",
        f"service  {field(event.service or '?')} on {field(event.host or '?')},"
        f" pid {field(event.pid if event.pid is not None else '?')}"
        + (
            f" (python {field(versions.python or '?')}, holmespy {field(versions.holmespy or '?')})"
            if versions
            else ""
        ),
        f"time     {field(event.time or '?')}",
        f"fired    {field(rule)} = {_value(event.value, unit)}"
        + (f"  ({RULES[rule].means})" if rule in RULES else ""),
        f"reason   {field(event.reason or '?', 2 * WIDE)}",
    ]
    given: list[tuple[str, float | str | None]] = [
        ("min", th.min),
        ("diff", th.diff),
        ("abs", th.abs),
        ("max", th.max),
        ("cooldown", th.cooldown),
        ("limit", th.limit),
    ]
    rule_parts = [
        f"{k}={_duration(v) if k == 'cooldown' else number(v)}" for k, v in given if v is not None
    ]
    if th.average is not None:
        rule_parts.append(f"average of the samples before: {_value(th.average, unit)}")
    if rule_parts:
        out.append("rule     " + ", ".join(rule_parts))
    limits = event.limits
    if limits:
        mem = limits.mem_bytes
        out.append(
            f"limits   CPU {number(limits.cpu_cores)} cores"
            f" ({field(limits.cpu_source or '?')}), memory "
            + (size(mem) if mem is not None else "?")
            + f" ({field(limits.mem_source or '?')})"
        )
    out.append(f"from     {field(where, 2 * WIDE)}")
    return out


def history(event: Event) -> list[str]:
    """The metric history as a chart of at most MAX_BARS bars (the newest ones);
    samples whose value is not a plottable number are left out."""
    samples = [p for p in event.history or () if _plottable(p.value)]
    if len(samples) < 2:
        return []
    total = len(samples)
    samples = samples[-MAX_BARS:]
    values = [float(p.value or 0) for p in samples]
    unit = event.unit or ""
    th = event.thresholds or Thresholds()
    lines: list[tuple[str, float]] = []
    level = th.fired_at
    if _plottable(level) and th.diff is not None:
        lines.append((f"average + {number(th.diff)}% = {number(round(level, 2))}", level))
    top = max(values)
    absolute = th.abs
    # A line far above every sample would flatten the bars into the floor.
    if _plottable(absolute) and absolute <= top * 2:
        lines.append((f"abs {number(absolute)}", float(absolute)))
    span = _span(samples)
    chart = bar_chart(
        values,
        lines=lines,
        unit="%" if unit == "%" else "",
        x_labels=(f"-{span}", "fired"),
    )
    what = RULES[event.rule].means if event.rule in RULES else "value"
    shown = f", the last {MAX_BARS} shown" if total > MAX_BARS else ""
    return ["", f"history  {what}, {total:,} samples{shown}, the firing one last", *chart]


def _plottable(value: object) -> TypeGuard[float]:
    """A number a chart can scale: finite, and not absurdly large (NaN, Infinity and
    1e300 are invalid values of a percentage or a count)."""
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and abs(value) <= MAX_VALUE
    )


def _span(samples: list[Point]) -> str:
    try:
        first = dt.datetime.fromisoformat(str(samples[0].time)[:40].replace("Z", "+00:00"))
        last = dt.datetime.fromisoformat(str(samples[-1].time)[:40].replace("Z", "+00:00"))
        seconds = (last - first).total_seconds()
    except (ValueError, TypeError):  # TypeError: one naive, one aware
        return "?"
    return f"{seconds:.1f}s" if seconds < 120 else f"{seconds / 60:.1f}m"


def _duration(seconds: object) -> str:
    """A cooldown as HOLMES_* settings write it: 1h, 10m, 45s."""
    if not isinstance(seconds, int | float) or isinstance(seconds, bool):
        return str(seconds)
    for unit, size_ in (("h", 3600), ("m", 60)):
        if seconds >= size_ and seconds % size_ == 0:
            return f"{int(seconds // size_)}{unit}"
    return f"{number(seconds)}s"


def _value(value: object, unit: str) -> str:
    if unit == "%":
        return f"{number(value)}%"
    return f"{number(value)} {field(unit, 20)}".rstrip()


def section(name: str, summary: str) -> str:
    title = f"── {name}: {summary} "
    return title + "─" * max(3, 72 - len(title))


def profile_part(path: Path, top: int, max_size: int, index: int | None = None) -> list[str]:
    profile = load(path, max_size)
    index = sample_index(profile) if index is None else index
    value_type = profile.sample_types[index]
    rows, total = hottest(profile, index)
    unit = value_type.unit
    out = [section(path.name, f"{field(value_type.type)}, total {quantity(total, unit)}")]
    if not rows:
        return [*out, "  no samples with a value"]
    table_rows = [["self", "self%", "cum", "cum%", "function"]]
    for row in rows[:top]:
        table_rows.append(
            [
                quantity(row.self, unit),
                percent(row.self, total),
                quantity(row.cum, unit),
                percent(row.cum, total),
                f"{row.function}  {_short(row.filename)}",
            ]
        )
    out += _indent(table(table_rows, right={"self", "self%", "cum", "cum%"}))
    return out


def loop_part(path: Path, top: int, max_size: int, stalls: object) -> list[str]:
    """The stalls from `event.json` (numbers and the most-seen stack of each), newest first."""
    if not isinstance(stalls, list):  # event.json says nothing of them: the text, as written
        why = "as written (event.json lists no stalls)"
        raw = read_member(path.parent, path.name, max_size, "--max-size") or b""
        return written(path.name, why, [], raw.decode("utf-8", "replace"))
    valid = [s for s in stalls if isinstance(s, dict)]
    seconds = [s["seconds"] for s in valid if isinstance(s.get("seconds"), int | float)]
    longest = f", longest {max(seconds):.2f} s" if seconds else ""
    out = [section(path.name, f"{plural(len(valid), 'stall')}{longest}, newest first")]
    for stall in valid[:top]:
        length = stall.get("seconds")
        length_text = f"{length:.2f} s" if isinstance(length, int | float) else "?"
        if stall.get("ended") is False:
            length_text += " (still stalled)"
        own = "  holmespy's own (heap capture): not counted" if stall.get("excused") else ""
        waited = stall.get("cpu_wait")
        if isinstance(waited, int | float) and not isinstance(waited, bool) and waited >= 0.001:
            own += f"  {waited:.2f} s waiting for a CPU: not counted"
        share = stall.get("top_share")
        seen = f", {share:.0%} in this stack" if isinstance(share, int | float) else ""
        out.append(
            f"  {length_text:>9}  thread {field(stall.get('thread'), WIDE // 2)},"
            f" from {field(stall.get('start'), 40)}"
            f" ({number(stall.get('samples'))} samples{seen}){own}"
        )
        stack = stall.get("stack")
        frames = (
            [f for f in stack[:FRAMES_SHOWN] if isinstance(f, str)]
            if isinstance(stack, list)
            else []
        )
        out += [f"{'':>13}{field(_short(f))}" for f in frames]
        if not frames:
            out.append(f"{'':>13}(no stack sampled)")
    return out


def recorder_part(path: Path, top: int, max_size: int, facts: dict[str, Any]) -> list[str]:
    """The flight recorder's hottest functions by CPU (by wall time if nothing used CPU)."""
    profile = load(path, max_size)
    index = sample_index(profile)
    if not hottest(profile, index)[1] and "wall" in [vt.type for vt in profile.sample_types]:
        index = sample_index(profile, "wall")
    out = profile_part(path, top, max_size, index)
    before, after = facts.get("seconds_before_trigger"), facts.get("seconds_after_trigger")
    if isinstance(before, int | float) and isinstance(after, int | float):
        rate = facts.get("rate_hz")
        out.insert(
            1,
            f"  every thread at {number(rate)} Hz, from {before:.1f} s before the trigger"
            f" to {after:.1f} s after it",
        )
    return out


def grew_part(folder: Path, top: int, max_size: int) -> list[str]:
    try:
        a, b = load(folder / "heap.pb.gz", max_size), load(folder / "heap-2.pb.gz", max_size)
        changes = site_changes(a, b, DEFAULT_TYPE)
    except (CLIError, BadUsage) as exc:
        return [
            section("heap.pb.gz → heap-2.pb.gz", "cannot compare"),
            f"!! {field(str(exc), 2 * WIDE)}",
        ]
    # A leak keeps memory alive in both windows: such sites first, then what grew.
    shown = [c for c in changes if c.held or c.growth > 0][:top]
    held = sum(1 for c in changes if c.held)
    grew = sum(1 for c in changes if c.growth > 0)
    summary = (
        f"{plural(held, 'site')} held memory in both windows, {grew} grew (holmespy diff for more)"
    )
    out = [section("heap.pb.gz → heap-2.pb.gz", summary)]
    rows = [["held", "growth", "after", "site"]]
    for c in shown:
        rows.append(
            [
                quantity(c.held, "bytes") if c.held else "-",
                signed(quantity(c.growth, "bytes"), c.growth),
                quantity(c.after, "bytes"),
                field(_short(c.name)),
            ]
        )
    right = {"held", "growth", "after"}
    return out + (_indent(table(rows, right=right)) if shown else ["  nothing held or grew"])


def dump_part(path: Path, top: int, max_size: int) -> list[str]:
    """A text dump's part: its objects from its JSON twin, else its text as written."""
    dump = load_dump_at(path, max_size)
    if dump.data is None:
        return as_written(dump)
    parts: dict[type, Callable[[Any, list[str], int], list[str]]] = {
        ThreadDump: threads_part,
        TaskDump: tasks_part,
        Census: types_part,
        HeapHolders: lambda found, problems, top: holders_part(found, problems, top, section),
    }
    return parts[type(dump.data)](dump.data, dump.problems, top)


TEXT_LINES = 40
"""Lines of a text dump shown as written (an older bundle's) before the rest are counted."""


def as_written(dump: Dump) -> list[str]:
    """A dump without JSON to read: its first lines as written, escaped."""
    twin = TWINS[dump.name][0]
    why = "as written" if dump.problems else f"as written (no {twin}: an older holmespy)"
    return written(dump.name, why, dump.problems, dump.text or "")


def written(name: str, why: str, problems: list[str], text: str) -> list[str]:
    """A file's first lines as written, escaped, under its heading: nothing parsed."""
    out = [section(name, why)]
    out += [f"!! {field(problem, 2 * WIDE)}" for problem in problems]
    lines = text.rstrip("\n").split("\n")
    out += ["  " + field(line, 4 * WIDE) for line in lines[:TEXT_LINES]]
    if len(lines) > TEXT_LINES:
        out.append(f"  … {len(lines) - TEXT_LINES:,} more lines in {name}")
    return out


def _problems(problems: list[str]) -> list[str]:
    shown = [f"!! {field(problem, 2 * WIDE)}" for problem in problems[:NAMES_SHOWN]]
    if len(problems) > NAMES_SHOWN:
        shown.append(f"!! and {len(problems) - NAMES_SHOWN:,} more values left out")
    return shown


def threads_part(dump: ThreadDump, problems: list[str], top: int) -> list[str]:
    groups = thread_groups(dump)
    total = sum(g.count for g in groups)
    summary = f"{plural(total, 'thread')} in {plural(len(groups), 'group')} of identical stacks"
    out = [section("threads.txt", summary), *_problems(problems)]
    if not groups:
        return [*out, "  no thread stacks"]
    for group in groups[:top]:
        out += _group(group, "thread", innermost_first=True)
    return out


def tasks_part(dump: TaskDump, problems: list[str], top: int) -> list[str]:
    groups = task_groups(dump)
    count = len(groups) + dump.rest_groups  # the writer lists the 500 largest
    summary = f"{plural(dump.total, 'task')} in {plural(count, 'group')} of identical await chains"
    out = [section("tasks.txt", summary), *_problems(problems)]
    if dump.error is not None:
        last = dump.error.strip().rsplit("\n", 1)[-1]  # a traceback's last line says what
        out.append(f"!! the task dump failed: {field(last, 2 * WIDE)}")
    if dump.unsupported is not None:
        out.append(f"  task listing is not supported on Python {field(dump.unsupported)}")
    if dump.grouped is not None:
        out.append(f"!! cut short: {dump.grouped:,} of {dump.total:,} tasks were grouped")
    blocked = blocked_lines(dump)
    for line, stack in blocked[:NAMES_SHOWN]:
        out.append(f"!! {field(line, 2 * WIDE)}")
        out += [f"{'':>14}{field(_short(f))}" for f in stack[:FRAMES_SHOWN]]
        if len(stack) > FRAMES_SHOWN:
            out.append(f"{'':>14}… {plural(len(stack) - FRAMES_SHOWN, 'outer frame')}")
        if not stack:
            out.append(f"{'':>14}(no stack in tasks.json; threads.txt has every thread's)")
    if not groups:
        return [*out, "  no tasks"]
    for group in groups[:top]:
        out += _group(group, "task", innermost_first=False)
    return out


def _group(group: StackGroup, noun: str, *, innermost_first: bool) -> list[str]:
    names = [field(name, WIDE // 2) for name in group.names[:3]]
    more = "…" if len(group.names) > 3 or group.count > len(names) else ""
    out = [f"  {plural(group.count, noun):>11}  {', '.join(names)}{more}"]
    frames = group.frames
    shown = frames[:FRAMES_SHOWN] if innermost_first else frames[-FRAMES_SHOWN:]
    if len(frames) > FRAMES_SHOWN and not innermost_first:
        out.append(f"{'':>14}… {plural(len(frames) - FRAMES_SHOWN, 'outer frame')}")
    out += [f"{'':>14}{field(_short(f))}" for f in shown]
    if len(frames) > FRAMES_SHOWN and innermost_first:
        out.append(f"{'':>14}… {plural(len(frames) - FRAMES_SHOWN, 'outer frame')}")
    if not frames:
        out.append(f"{'':>14}(no Python frames)")
    return out


def types_part(census: Census, problems: list[str], top: int) -> list[str]:
    total = f"{census.total:,} objects"
    if census.growth:
        out = [section("heap-types.txt", f"{total}; fastest growing types")]
        growers = sorted(census.growth.items(), key=lambda item: (-item[1], item[0]))[:top]
        rows = [["growth", "count", "type"]]
        rows += [[f"{g:+,}", f"{census.counts.get(n, 0):,}", n] for n, g in growers]
    else:
        out = [section("heap-types.txt", f"{total}; most common types (no earlier census)")]
        common = sorted(census.counts.items(), key=lambda item: (-item[1], item[0]))[:top]
        rows = [["count", "type"]] + [[f"{c:,}", n] for n, c in common]
    out += _problems(problems)
    if census.error:
        out.append(f"!! census failed: {field(census.error, 2 * WIDE)}")
    out += _indent(table(rows, right={"growth", "count"}))
    largest = census.by_bytes()[:top]
    if largest:
        out.append("  largest by shallow bytes:")
        rows = [["bytes", "type"]] + [[size(b), n] for n, b, _ in largest]
        out += ["  " + line for line in _indent(table(rows, right={"bytes"}))]
    return out


def _short(text: str) -> str:
    """`f (/long/path/app.py:12)` -> `f (app.py:12)`: the name is module-qualified already."""
    if "/" in text and not text.endswith(")"):
        return text.rsplit("/", 1)[-1]
    head, paren, inner = text.rpartition("(")
    if not paren or not inner.endswith(")") or ")" in inner[:-1]:
        return text
    name = inner[:-1].rsplit("/", 1)[-1]
    return f"{head}({name})" if name else text


def _indent(text: str) -> list[str]:
    return ["  " + line for line in text.splitlines()]
