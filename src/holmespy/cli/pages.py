"""The HTML of `holmespy serve`: the event list, one event, two events compared, an error.

Pages are strings built from the views `holmespy.cli.site` reads; every
string that came from a bundle, a key or a dump goes through `t()`:
control, bidi and separator characters made visible (`holmespy.printable`),
cut to a bounded length, then HTML-escaped. Flame graph data is embedded as
JSON in a `<script type="application/json">` element with `<`, `>` and `&`
escaped, so no frame name can close it; the script that draws it is a file
of the package (`static/flame.js`), and the page's Content-Security-Policy
lets no other script run.
"""

from __future__ import annotations

import datetime as dt
import html
import json
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote, urlencode

from holmespy.census import Census
from holmespy.cli.dumps import StackGroup, blocked_lines, task_groups
from holmespy.cli.events import event_time
from holmespy.cli.flamegraph import Node
from holmespy.cli.profiles import FunctionCost
from holmespy.cli.site import EventRow, EventView, Part, ProfileView
from holmespy.cli.svgchart import history_svg
from holmespy.cli.text import age, number, plural, size
from holmespy.event import Event, Thresholds
from holmespy.heapholders import HeapHolders
from holmespy.manifest import EVENT_FILE
from holmespy.printable import printable, printable_lines
from holmespy.registry import RULE_NAMES, RULES
from holmespy.taskdump import TaskDump

LONG = 400
"""Characters of one field from a bundle shown at most (a reason, a frame)."""
FRAMES = 12
"""Frames of a thread or task group shown before the rest are counted."""
ROWS = 15
"""Rows of each table (hottest functions, groups, types) at most."""
MIN_SHARE_DENOMINATOR = 2000
"""Flame graph frames narrower than this share of the total are left out of the page."""


@dataclass(frozen=True)
class ErrorBody:
    """A page that is one line saying what went wrong."""

    message: str


def t(value: object, limit: int = LONG) -> str:
    """A value from elsewhere, as page text: visible escapes, bounded, HTML-escaped."""
    text = value if isinstance(value, str) else str(value)
    return html.escape(printable(text, limit), quote=True)


def pre(text: str, limit: int = 200_000) -> str:
    """A text dump for a `<pre>`: line feeds kept, everything else as in `t()`."""
    cut = text[:limit] + ("\n…" if len(text) > limit else "")
    return html.escape(printable_lines(cut), quote=True)


def page(title: str, body: str, source: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=en>\n<head>\n<meta charset=utf-8>\n"
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="referrer" content="no-referrer">\n'
        f"<title>{t(title, 200)} · holmespy</title>\n"
        '<link rel="stylesheet" href="/static/serve.css">\n</head>\n<body>\n'
        f'<header class="top"><a href="/">holmespy</a><span class="src">{t(source)}</span>'
        "</header>\n"
        f"<main>\n{body}\n</main>\n"
        '<script src="/static/flame.js"></script>\n</body>\n</html>\n'
    )


def error_page(status: int, message: str, source: str) -> str:
    body = f'<p class="error problem">{t(message, 2000)}</p><p><a href="/">all events</a></p>'
    return page(f"{status}", body, source)


# -- the list -------------------------------------------------------------------------


def list_page(
    rows: Sequence[EventRow],
    *,
    form: dict[str, str],
    services: Sequence[str],
    page_number: int,
    more: bool,
    now: dt.datetime,
    source: str,
) -> str:
    out = ["<h1>Events</h1>", _filters(form, services)]
    if not rows:
        out.append("<p>No event matches.</p>")
    else:
        out.append('<form method="get" action="/compare">')
        out.append(
            "<table class=events><thead><tr><th title='choose two to compare'>a&nbsp;&nbsp;b</th>"
            "<th>time (UTC)</th>"
            "<th class=num>age</th><th>service</th><th>rule</th><th class=num>value</th>"
            "<th>host</th><th>event</th></tr></thead><tbody>"
        )
        for row in rows:
            out.append(_row(row, now))
        out.append("</tbody></table>")
        out.append('<p><button type="submit">Compare the two chosen (a, b)</button></p></form>')
    pager = []
    if page_number > 1:
        pager.append(f'<a rel="prev" href="/?{_with(form, page_number - 1)}">← newer</a>')
    pager.append(f"<span>page {page_number}</span>")
    if more:
        pager.append(f'<a rel="next" href="/?{_with(form, page_number + 1)}">older →</a>')
    out.append(f'<nav class="pager">{"".join(pager)}</nav>')
    return page("Events", "\n".join(out), source)


def _with(form: dict[str, str], number_: int) -> str:
    return urlencode({**{k: v for k, v in form.items() if v}, "page": str(number_)})


def _filters(form: dict[str, str], services: Sequence[str]) -> str:
    def options(values: Sequence[str], chosen: str) -> str:
        items = ['<option value="">any</option>']
        items += [
            f'<option value="{t(v)}"{" selected" if v == chosen else ""}>{t(v)}</option>'
            for v in values
        ]
        return "".join(items)

    def text(name: str, hint: str) -> str:
        return (
            f'<label>{name}<input name="{name}" value="{t(form.get(name, ""))}"'
            f' placeholder="{hint}"></label>'
        )

    return (
        '<form class="filters" method="get" action="/">'
        f'<label>service<select name="service">{options(services, form.get("service", ""))}'
        "</select></label>"
        f'<label>rule<select name="rule">{options(RULE_NAMES, form.get("rule", ""))}'
        "</select></label>"
        + text("host", "web-3")
        + text("since", "2h or 2026-11-24T04:00")
        + text("until", "30m")
        + '<button type="submit">Filter</button> <a href="/">clear</a></form>'
    )


def _row(row: EventRow, now: dt.datetime) -> str:
    ref = row.ref
    when = event_time(ref.id)
    link = f"/event/{quote(ref.id)}"
    event = row.event
    value = _value(event.value, event.unit) if event is not None else ""
    host = t(event.host or "", 80) if event is not None else ""
    if row.error:
        value = '<span class="problem">unreadable event.json</span>'
    return (
        '<tr class="event">'
        f'<td><input type="radio" name="a" value="{t(ref.id)}" title="a">'
        f'<input type="radio" name="b" value="{t(ref.id)}" title="b"></td>'
        f"<td>{when.strftime('%Y-%m-%d %H:%M:%S') if when else '?'}</td>"
        f'<td class="num">{age(now - when) if when else "?"}</td>'
        f"<td>{t(ref.service)}</td><td>{t(ref.rule)}</td><td class=num>{value}</td>"
        f'<td>{host}</td><td><a class="mono" href="{link}">{t(ref.id)}</a></td></tr>'
    )


def duration(seconds: float) -> str:
    """A cooldown as HOLMES_* settings write it: 1h, 10m, 45s."""
    for unit, length in (("h", 3600), ("m", 60)):
        if seconds >= length and seconds % length == 0:
            return f"{int(seconds // length)}{unit}"
    return f"{number(seconds)}s"


def _value(value: float | None, unit: str | None) -> str:
    if value is None:
        return "?"
    if unit == "%":
        return f"{number(value)}%"
    return t(f"{number(value)} {unit or ''}".strip(), 60)


# -- one event ------------------------------------------------------------------------


def event_page(view: EventView, source: str) -> str:
    event = view.event
    out = [f'<h1>{t(event.rule)} event <span class="mono">{t(view.ref.id)}</span></h1>']
    out.append(why(event))
    out += [f'<p class="problem">event.json: {t(p)}</p>' for p in view.problems[:20]]
    out.append(chart(event))
    for part in view.parts:
        out.append(_part(part))
    out.append(_files(view))
    return page(f"{event.rule} {view.ref.id}", "\n".join(out), source)


def why(event: Event) -> str:
    th = event.thresholds or Thresholds()
    rule = RULES.get(event.rule)
    rows = [
        ("service", f"{t(event.service)} on {t(event.host or '?')}, pid {t(event.pid or '?')}"),
        ("time", t(event.time or "?")),
        (
            "fired",
            f"{t(event.rule)} = <b>{_value(event.value, event.unit)}</b>"
            + (f" ({t(rule.means)})" if rule else ""),
        ),
        ("reason", t(event.reason or "?")),
    ]
    given = [
        (k, v)
        for k, v in (("min", th.min), ("diff", th.diff), ("abs", th.abs), ("max", th.max))
        if v is not None
    ]
    rule_text = ", ".join(f"{k}={number(v)}" for k, v in given)
    if th.cooldown is not None:
        rule_text += f", cooldown={duration(th.cooldown)}"
    if th.limit:
        rule_text += f", limit={t(th.limit, 40)}"
    if th.average is not None:
        rule_text += f"; average before: {_value(th.average, event.unit)}"
    if rule_text:
        rows.append(("rule", rule_text.lstrip(", ")))
    if event.limits:
        lim = event.limits
        mem = size(lim.mem_bytes) if lim.mem_bytes is not None else "?"
        rows.append(
            (
                "limits",
                f"CPU {number(lim.cpu_cores)} cores ({t(lim.cpu_source or '?')}),"
                f" memory {mem} ({t(lim.mem_source or '?')})",
            )
        )
    if event.versions:
        v = event.versions
        rows.append(("versions", f"python {t(v.python or '?')}, holmespy {t(v.holmespy or '?')}"))
        for feature, what in list(v.lacks.items())[:10]:
            rows.append(("lacks", f"{t(feature)}: {t(what)}"))
    for name, facts in (event.captures or {}).items():
        if facts.engine:
            why_text = f": {t(facts.why)}" if facts.why else ""
            rows.append((t(name), f"profiled by {t(facts.engine)}{why_text}"))
        if facts.error:
            rows.append((t(name), f'<span class="problem">failed: {t(facts.error)}</span>'))
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    partial = ""
    if event.partial:
        partial = f'<p class="partial">partial: {t(event.partial_reason or "cut short")}</p>'
    return f'{partial}<table class="facts">{body}</table>'


def chart(event: Event) -> str:
    points = [p for p in event.history or () if p.value is not None and abs(p.value) <= 1e15]
    if len(points) < 2:
        return ""
    points = points[-600:]
    th = event.thresholds or Thresholds()
    values = [float(p.value or 0) for p in points]
    lines: list[tuple[str, float]] = []
    level = th.fired_at
    if level is not None and th.diff is not None and abs(level) <= 1e15:
        lines.append((f"average + {number(th.diff)}% = {number(round(level, 2))}", level))
    if th.abs is not None and th.abs <= max(values) * 2:
        lines.append((f"abs {number(th.abs)}", float(th.abs)))
    rule = RULES.get(event.rule)
    caption = f"history: {rule.means if rule else 'value'}, {len(points)} samples"
    svg = history_svg(
        values,
        lines=lines,
        unit=event.unit or "",
        caption=caption,
        times=[printable(p.time or "", 40) for p in points],
    )
    return f"<h2>{t(caption)}, the firing one last</h2>\n{svg}"


def _part(part: Part) -> str:
    out = [f'<h2 id="{t(part.name)}">{t(part.name)}: {t(part.title)}</h2>']
    if part.error:
        out.append(f'<p class="problem">{t(part.error, 1000)}</p>')
        return "\n".join(out)
    out += [f'<p class="problem">{t(note, 1000)}</p>' for note in part.notes]
    if part.profile is not None:
        out.append(_profile(part.name, part.profile))
    if part.threads is not None:
        out.append(_groups(part.threads, "thread", innermost_first=True))
    if part.tasks is not None:
        out.append(_tasks(part.tasks))
    if part.census is not None:
        out.append(_census(part.census))
    if part.holders is not None:
        out.append(_holders(part.holders))
    if part.text is not None:
        out.append(f"<pre>{pre(part.text)}</pre>")
    return "\n".join(out)


def _profile(name: str, view: ProfileView) -> str:
    rows = [
        "<table><thead><tr><th class=num>self</th><th class=num>self %</th><th class=num>cum</th>"
        "<th class=num>cum %</th><th>function</th><th>file</th></tr></thead><tbody>"
    ]
    for cost in view.hottest[:ROWS]:
        rows.append(_cost(cost, view))
    rows.append("</tbody></table>")
    return "\n".join([*rows, flame(name, view.tree, view.unit)])


def _cost(cost: FunctionCost, view: ProfileView) -> str:
    def share(value: int) -> str:
        return f"{100 * value / view.total:.1f}%" if view.total else "?"

    return (
        f"<tr><td class=num>{t(view.amount(cost.self))}</td><td class=num>{share(cost.self)}</td>"
        f"<td class=num>{t(view.amount(cost.cum))}</td><td class=num>{share(cost.cum)}</td>"
        f'<td class="mono">{t(cost.function)}</td><td class="mono">{t(cost.filename)}</td></tr>'
    )


def flame(name: str, tree: Node, unit: str) -> str:
    data = tree.as_data(tree.value / MIN_SHARE_DENOMINATOR)
    payload = (
        json.dumps({"root": data, "unit": unit}, separators=(",", ":"))
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
    )
    return (
        f'<section class="flame" data-profile="{t(name)}">'
        '<div class="bar"><input class="search" type="search"'
        ' placeholder="search frames (text or /regex/)">'
        '<span class="matched"></span><button class="reset" type="button">Reset zoom</button>'
        "</div>"
        '<div class="graph"></div>'
        '<div class="status">Click a frame to zoom in, the top frame or Esc to zoom out.</div>'
        f'<script type="application/json" class="flame-data">{payload}</script></section>'
    )


def _groups(groups: Sequence[StackGroup], noun: str, *, innermost_first: bool) -> str:
    total = sum(g.count for g in groups)
    out = [f"<p>{plural(total, noun)} in {plural(len(groups), 'group')} of identical stacks</p>"]
    for group in groups[:ROWS]:
        names = ", ".join(t(n, 80) for n in group.names[:5])
        more = "…" if len(group.names) > 5 else ""
        frames = group.frames if innermost_first else list(reversed(group.frames))
        shown = "\n".join(t(f) for f in frames[:FRAMES])
        if len(frames) > FRAMES:
            shown += f"\n… {len(frames) - FRAMES} outer frames"
        where = f" {t(group.where)}" if group.where else ""
        out.append(
            f"<details open><summary><b>{plural(group.count, noun)}</b>{where}: {names}{more}"
            f"</summary><pre>{shown or '(no Python frames)'}</pre></details>"
        )
    return "\n".join(out)


def _tasks(dump: TaskDump) -> str:
    out = []
    if dump.error is not None:
        out.append(f'<p class="problem">the task dump failed</p><pre>{pre(dump.error)}</pre>')
    if dump.unsupported is not None:
        out.append(f"<p>task listing is not supported on Python {t(dump.unsupported)}</p>")
    if dump.grouped is not None:
        out.append(
            f'<p class="problem">cut short: {dump.grouped:,} of {dump.total:,} tasks'
            " were grouped</p>"
        )
    for line, stack in blocked_lines(dump)[:10]:
        frames = "\n".join(t(f) for f in stack[:FRAMES])
        out.append(f'<p class="problem">{t(line)}</p><pre>{frames}</pre>')
    out.append(_groups(task_groups(dump), "task", innermost_first=False))
    return "\n".join(out)


def _census(census: Census) -> str:
    objects = f"{census.total:,} objects"
    if census.growth:
        ranked = sorted(census.growth.items(), key=lambda item: -item[1])[:ROWS]
        head = "<tr><th class=num>growth</th><th class=num>count</th><th>type</th></tr>"
        rows = [
            f"<tr><td class='num grow'>{g:+,}</td><td class=num>{census.counts.get(n, 0):,}</td>"
            f'<td class="mono">{t(n)}</td></tr>'
            for n, g in ranked
        ]
        title = f"{objects}; fastest growing types"
    else:
        ranked = sorted(census.counts.items(), key=lambda item: -item[1])[:ROWS]
        head = "<tr><th class=num>count</th><th>type</th></tr>"
        rows = [f'<tr><td class=num>{c:,}</td><td class="mono">{t(n)}</td></tr>' for n, c in ranked]
        title = f"{objects}; most common types"
    return f"<p>{title}</p><table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"


def _holders(found: HeapHolders) -> str:
    problems = [f"partial: {found.partial}"] if found.partial else []
    problems += [f"failed: {found.error}"] if found.error else []
    out = [f'<p class="problem">{t(p)}</p>' for p in problems]
    out.append(
        "<table><thead><tr><th class=num>bytes</th><th class=num>objects</th>"
        "<th class=num>growth</th><th>held by</th><th>largest types</th></tr></thead><tbody>"
    )
    for row in found.holders[:ROWS]:
        growth = ""
        if row.growth is not None:
            growth = f"{'≥' if row.growth[2] else ''}{row.growth[1]:+,} B"
        types = ", ".join(f"{t(type_.name, 60)} ({size(type_.bytes)})" for type_ in row.types[:3])
        out.append(
            f"<tr><td class=num>{size(row.bytes)}</td><td class=num>{row.objects:,}</td>"
            f"<td class='num grow'>{growth}</td><td class=mono>{t(row.label)}"
            f"<br><small>{t(row.about)}</small></td><td class=mono>{types}</td></tr>"
        )
    out.append("</tbody></table>")
    return "\n".join(out)


def _files(view: EventView) -> str:
    href = f"/event/{quote(view.ref.id)}/file/{EVENT_FILE}"
    link = f'<a href="{href}" download>{EVENT_FILE}</a>'
    rows = [f"<tr><td class=mono>{link}</td><td></td><td></td></tr>"]
    for entry in view.event.files or ():
        shown = t(entry.name, 200)
        if entry.name in view.downloadable:
            href = f"/event/{quote(view.ref.id)}/file/{quote(entry.name)}"
            shown = f'<a href="{href}" download>{shown}</a>'
        rows.append(
            f"<tr><td class=mono>{shown}</td>"
            f"<td class=num>{size(entry.size) if entry.size is not None else '?'}</td>"
            f"<td class=mono>{t(entry.sha256 or '', 64)}</td></tr>"
        )
    return (
        "<h2>files</h2><table><thead><tr><th>name</th><th class=num>size</th><th>sha256</th>"
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


# -- two events -------------------------------------------------------------------------


def compare_page(a: EventView, b: EventView, extra: Sequence[Part], source: str) -> str:
    def column(view: EventView, label: str) -> str:
        link = f'<a class="mono" href="/event/{quote(view.ref.id)}">{t(view.ref.id)}</a>'
        hottest = ""
        for part in view.parts:
            if part.profile is not None:
                costs = "".join(_cost(c, part.profile) for c in part.profile.hottest[:8])
                hottest += (
                    f"<h2>{t(part.name)}: hottest</h2><table><thead><tr><th class=num>self</th>"
                    "<th class=num>self %</th><th class=num>cum</th><th class=num>cum %</th>"
                    f"<th>function</th><th>file</th></tr></thead><tbody>{costs}</tbody></table>"
                )
        return f"<div><h1>{label}: {link}</h1>{why(view.event)}{chart(view.event)}{hottest}</div>"

    body = f'<div class="columns">{column(a, "a")}{column(b, "b")}</div>'
    body += "".join(_part(part) for part in extra)
    return page(f"compare {a.ref.id} {b.ref.id}", body, source)
