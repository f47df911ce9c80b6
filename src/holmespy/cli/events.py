"""Choosing events: the filters `ls`, `fetch --latest` and `show` share, and how they
are answered from a source with as few requests as the key layout allows.

Service, day, time and rule come from names, so a filter on them prunes whole
days before anything is listed, starts a day's listing at `--since` (ids sort
by time), and never reads an `event.json`. Only `--host` needs the events
themselves: it reads the `event.json` of every event the other filters kept.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import re
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from holmespy.bundle import EVENT_FILE
from holmespy.cli.deadline import add_timeout_arg
from holmespy.cli.errors import BadUsage, NotFound, UnsafePath
from holmespy.cli.reading import EVENT_JSON_MAX, BadJSON, load_event_json
from holmespy.cli.source import (
    EVENT_ID_RE,
    SERVICE_RE,
    EventRef,
    Source,
    check_event_id,
)
from holmespy.config import RULE_NAMES, parse_duration
from holmespy.errors import ConfigError

T = TypeVar("T")
R = TypeVar("R")


def add_filter_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--from", dest="source", metavar="SRC", help="a dump folder or s3://bucket/prefix"
    )
    add_timeout_arg(parser)
    parser.add_argument("--service", help="only this service")
    parser.add_argument(
        "--rule", action="append", choices=RULE_NAMES, help="only this rule (repeatable)"
    )
    parser.add_argument("--host", help="only this host (reads each event's event.json)")
    parser.add_argument(
        "--since",
        metavar="WHEN",
        help="only events at or after WHEN: an age (30m, 2h) or a UTC time",
    )
    parser.add_argument(
        "--until", metavar="WHEN", help="only events before WHEN: an age (30m, 2h) or a UTC time"
    )


def event_time(event_id: str) -> dt.datetime | None:
    match = EVENT_ID_RE.fullmatch(event_id)
    return _stamp_time(match.group(1)) if match else None


def _stamp_time(stamp: str) -> dt.datetime:
    # By hand: strptime costs 30 µs, a third of `ls`'s own time over 10,000 events.
    return dt.datetime(
        int(stamp[0:4]),
        int(stamp[4:6]),
        int(stamp[6:8]),
        int(stamp[9:11]),
        int(stamp[11:13]),
        int(stamp[13:15]),
        int(stamp[16:19]) * 1000,
        tzinfo=dt.UTC,
    )


def id_stamp(when: dt.datetime) -> str:
    """The leading part of the ids of events at `when`, to compare ids with a time."""
    when = when.astimezone(dt.UTC)
    return when.strftime("%Y%m%dT%H%M%S.") + f"{when.microsecond // 1000:03d}Z"


def parse_when(flag: str, text: str, now: dt.datetime) -> dt.datetime:
    """An age before `now` (`90s`, `2h`, `1d12h`), or a time (`2026-11-24`, `…T04:08`, UTC)."""
    # Days matter here as they do not in HOLMES_* durations: "what fired in the last 2d".
    days = re.fullmatch(r"\s*([0-9]{1,9})d(.*)", text)
    try:
        if days:
            rest = days.group(2).strip()
            seconds = int(days.group(1)) * 86400 + (parse_duration(flag, rest) if rest else 0)
        else:
            seconds = parse_duration(flag, text)
        return now - dt.timedelta(seconds=seconds)
    except ConfigError:
        pass
    except (OverflowError, ValueError):  # an age older than any date
        raise BadUsage(f"{flag} {text!r}: too long ago") from None
    try:
        when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise BadUsage(
            f"{flag} {text!r}: expected an age such as 30m, 2h or 1d2h, or a UTC time"
            " such as 2026-11-24 or 2026-11-24T04:08"
        ) from None
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)


@dataclass(frozen=True)
class Query:
    service: str | None = None
    rules: frozenset[str] = frozenset()
    host: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    id_prefix: str = ""

    @classmethod
    def from_args(cls, args: argparse.Namespace, now: dt.datetime | None = None) -> Query:
        now = now or dt.datetime.now(dt.UTC)
        service = args.service
        if service is not None and not SERVICE_RE.fullmatch(service):
            raise BadUsage(f"--service {service!r}: not a service name (letters, digits, ._-)")
        since = parse_when("--since", args.since, now) if args.since else None
        until = parse_when("--until", args.until, now) if args.until else None
        if since and until and since >= until:
            raise BadUsage(f"--since {args.since} is not before --until {args.until}")
        return cls(service, frozenset(args.rule or ()), args.host, since, until)

    def wants_day(self, day: str) -> bool:
        digits = day.replace("-", "")
        prefix = self.id_prefix[:8]
        if not (digits.startswith(prefix) or prefix.startswith(digits)):
            return False
        if self.since and digits < self.since.strftime("%Y%m%d"):
            return False
        return not (self.until and digits > self.until.strftime("%Y%m%d"))

    def wants_id(self, event_id: str) -> bool:
        match = EVENT_ID_RE.fullmatch(event_id)
        if match is None or not event_id.startswith(self.id_prefix):
            return False
        if self.rules and match.group(2) not in self.rules:
            return False
        if self.since is None and self.until is None:
            return True
        when = _stamp_time(match.group(1))
        if self.since and when < self.since:
            return False
        return not (self.until and when >= self.until)

    def start_after(self, day: str) -> str:
        """Where listing `day` can start: just before the first id `--since` lets through."""
        if self.since and self.since.strftime("%Y-%m-%d") == day:
            return id_stamp(self.since)[:-1]  # an id at exactly `since` sorts after this
        return ""


def parallel_map(source: Source, func: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """`func` over `items` with the source's concurrency, results in the order of `items`."""
    if source.workers <= 1 or len(items) <= 1:
        return [func(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(source.workers, len(items))) as pool:
        return list(pool.map(func, items))


def select(source: Source, query: Query, limit: int | None = None) -> list[EventRef]:
    """Events matching the query's name filters, newest first, at most `limit`.

    Days are listed newest first, all services of one day at once; once
    `limit` events are found no older day is listed, so `--latest` costs a
    few requests however long the history.
    """
    services = [query.service] if query.service else source.services()
    days = parallel_map(source, source.days, services)
    by_day: dict[str, list[str]] = {}
    for service, service_days in zip(services, days, strict=True):
        for day in service_days:
            if query.wants_day(day):
                by_day.setdefault(day, []).append(service)

    def list_day(unit: tuple[str, str]) -> list[EventRef]:
        service, day = unit
        # A prefix longer than the date narrows the listing itself.
        prefix = query.id_prefix if len(query.id_prefix) > 8 else ""
        ids = source.event_ids(service, day, prefix=prefix, start_after=query.start_after(day))
        return [EventRef(service, day, i) for i in ids if query.wants_id(i)]

    found: list[EventRef] = []
    pending = sorted(by_day, reverse=True)
    while pending:
        # Enough days at once to keep the workers busy, but no more: older days may not be needed.
        batch: list[tuple[str, str]] = []
        while pending and (limit is None or len(batch) < source.workers):
            day = pending.pop(0)
            batch.extend((service, day) for service in by_day[day])
        for refs in parallel_map(source, list_day, batch):
            found.extend(refs)
        if limit is not None and len(found) >= limit and not query.host:
            break
    found.sort(key=lambda r: (r.id, r.service), reverse=True)
    return found if limit is None or query.host else found[:limit]


@dataclass
class Loaded:
    ref: EventRef
    event: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    """Why `event.json` could not be read: then `event` is empty."""


def read_event(source: Source, ref: EventRef) -> Loaded:
    try:
        # One byte past the limit is enough to know it is too large.
        data = source.read(ref, EVENT_FILE, limit=EVENT_JSON_MAX + 1)
    except NotFound:
        return Loaded(ref, error=f"{ref.id}: the event has no {EVENT_FILE}")
    except FileNotFoundError:
        return Loaded(ref, error=f"{ref.id}: the event has no {EVENT_FILE}")
    except OSError as exc:
        return Loaded(ref, error=f"{ref.id}: cannot read {EVENT_FILE}: {exc.strerror or exc}")
    except UnsafePath as exc:  # a link or a pipe planted in its place: one bad event of many
        return Loaded(ref, error=str(exc))
    return parse_event(ref, data)


def parse_event(ref: EventRef, data: bytes) -> Loaded:
    """`event.json` read within its limits (`holmespy.cli.reading`); an error, not an
    exception, when it is refused: one bad event must not hide the others."""
    try:
        event = load_event_json(data)
    except BadJSON as exc:
        return Loaded(ref, error=f"{ref.id}: corrupt {EVENT_FILE}: {exc}")
    if not isinstance(event, dict):
        return Loaded(ref, error=f"{ref.id}: corrupt {EVENT_FILE}: not a JSON object")
    return Loaded(ref, event)


def load_events(source: Source, refs: Iterable[EventRef]) -> list[Loaded]:
    return parallel_map(source, lambda ref: read_event(source, ref), list(refs))


def filter_host(loaded: list[Loaded], host: str | None) -> list[Loaded]:
    if host is None:
        return loaded
    return [item for item in loaded if item.event.get("host") == host]


def find_event(source: Source, text: str, query: Query | None = None) -> EventRef:
    """The one event whose id is `text`, or starts with it."""
    query = query or Query()
    prefix = check_event_id(text)
    matches = select(source, dataclasses.replace(query, id_prefix=prefix))
    if query.host:
        matches = [item.ref for item in filter_host(load_events(source, matches), query.host)]
    exact = [ref for ref in matches if ref.id == prefix]
    if exact:
        return exact[0]
    if not matches:
        raise NotFound(f"{text}: no such event in {source.url} (list them with holmespy ls)")
    if len(matches) > 1:
        shown = ", ".join(ref.id for ref in matches[:3])
        more = f" and {len(matches) - 3} more" if len(matches) > 3 else ""
        raise BadUsage(
            f"{text}: matches {len(matches)} events ({shown}{more}); give more of the id"
        )
    return matches[0]


def latest_event(source: Source, query: Query) -> EventRef:
    refs = select(source, query, limit=1)
    if query.host:
        refs = [item.ref for item in filter_host(load_events(source, refs), query.host)]
    if not refs:
        raise NotFound(f"no event in {source.url} matches the filters (see holmespy ls)")
    return refs[0]
