"""What `holmespy serve` reads from a source to show, as views the pages render.

Everything is read through the CLI's `Source` (a folder or S3), with the
CLI's limits: `event.json` at most 4 MiB, each profile or dump at most
`--max-size` bytes read and once decompressed. A file of an event is read
only if its `event.json` lists it under a plain file name
(`holmespy.manifest.FILE_NAME_RE`); in a folder the source opens it without
following links. A file that cannot be read becomes an error in its part of
the page; the rest of the event is still shown.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from holmespy.census import Census
from holmespy.cli.diff import site_changes
from holmespy.cli.dumps import TWINS, StackGroup, load_dump, thread_groups
from holmespy.cli.errors import CLIError, UnsafePath
from holmespy.cli.events import (
    Query,
    filter_host,
    find_event,
    load_events,
    parallel_map,
    parse_event,
    select,
)
from holmespy.cli.flamegraph import Node, tree_from_profile
from holmespy.cli.profiles import FunctionCost, collector_paused, hottest
from holmespy.cli.reading import EVENT_JSON_MAX, mib
from holmespy.cli.source import EventRef, Source
from holmespy.cli.text import plural, quantity
from holmespy.event import Event
from holmespy.formats.collapsed import sample_index
from holmespy.formats.pprof import ProfileFormatError, ProfileTooLarge, decode
from holmespy.formats.profile import Profile
from holmespy.heapholders import HeapHolders
from holmespy.manifest import EVENT_FILE, FILE_NAME_RE
from holmespy.stackdump import ThreadDump
from holmespy.storage.base import ObjectReader
from holmespy.taskdump import TaskDump

PAGE_SIZE = 50
"""Events per page of the list."""
NOTES = 10
"""Problems of one part said before the rest are only counted."""
PROFILES = ("cpu.pb.gz", "heap.pb.gz", "heap-2.pb.gz", "loop.pb.gz", "recorder.pb.gz")
TEXTS = ("threads.txt", "tasks.txt", "heap-types.txt", "heap-holders.txt", "loop.txt")


@dataclass
class EventRow:
    ref: EventRef
    event: Event | None = None
    error: str | None = None


@dataclass
class ProfileView:
    unit: str
    total: int
    hottest: list[FunctionCost]
    tree: Node

    def amount(self, value: int) -> str:
        return quantity(value, self.unit)


@dataclass
class Part:
    """One file of the event as the page shows it (or the error that took its place)."""

    name: str
    title: str = ""
    error: str | None = None
    profile: ProfileView | None = None
    threads: list[StackGroup] | None = None
    tasks: TaskDump | None = None
    census: Census | None = None
    holders: HeapHolders | None = None
    text: str | None = None
    """A file shown as it is (`loop.txt`, a site diff, the text of a dump without JSON)."""
    notes: list[str] = field(default_factory=list)
    """What went wrong without hiding the part: values left out of a dump's JSON, or why
    the JSON was not read (its text is shown instead)."""


@dataclass
class EventView:
    ref: EventRef
    event: Event
    problems: list[str]
    parts: list[Part] = field(default_factory=list)
    downloadable: frozenset[str] = frozenset()
    """Listed files whose names are plain file names: the ones the page links to."""
    profiles: dict[str, Profile] = field(default_factory=dict)


class Site:
    """Reads for the pages; `source` is one made for the request (its own S3 deadline)."""

    def __init__(self, source: Source, max_size: int) -> None:
        self.source = source
        self.max_size = max_size

    # -- the list --

    def rows(self, query: Query, page: int) -> tuple[list[EventRow], bool]:
        """The events of page `page` (from 1), newest first, and whether older ones exist."""
        wanted = page * PAGE_SIZE + 1
        if query.host:
            refs = select(self.source, query)
            loaded = filter_host(load_events(self.source, refs), query.host)
            shown = loaded[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
            more = len(loaded) > page * PAGE_SIZE
        else:
            refs = select(self.source, query, limit=wanted)
            more = len(refs) > page * PAGE_SIZE
            shown = load_events(self.source, refs[(page - 1) * PAGE_SIZE : page * PAGE_SIZE])
        rows = []
        for item in shown:
            event = None
            if not item.error:
                event, _ = Event.read(item.event)
            rows.append(EventRow(item.ref, event, item.error))
        return rows, more

    def services(self) -> list[str]:
        return self.source.services()

    # -- one event --

    def find(self, event_id: str) -> EventRef:
        return find_event(self.source, event_id)

    def event(self, event_id: str, *, parts: bool = True) -> EventView:
        ref = self.find(event_id)
        data = self._read(ref, EVENT_FILE, EVENT_JSON_MAX)
        loaded = parse_event(ref, data)
        if loaded.error:
            raise CLIError(loaded.error)
        event, problems = Event.read(loaded.event)
        listed = event.file_names
        view = EventView(
            ref,
            event,
            problems,
            downloadable=frozenset([EVENT_FILE, *(n for n in listed if FILE_NAME_RE.fullmatch(n))]),
        )
        if parts:
            wanted = [n for n in (*PROFILES, *TEXTS) if n in view.downloadable]
            view.parts = parallel_map(self.source, lambda name: self._part(view, name), wanted)
            first, second = view.profiles.get("heap.pb.gz"), view.profiles.get("heap-2.pb.gz")
            if first is not None and second is not None:  # the gcheap pair
                view.parts.append(_site_diff(first, second, "heap.pb.gz → heap-2.pb.gz"))
        return view

    def file(self, event_id: str, name: str) -> tuple[EventRef, ObjectReader]:
        """A listed file, for download a block at a time (its memory is one block, whatever
        its size); `UnsafePath` for a name `event.json` does not list."""
        view = self.event(event_id, parts=False)
        if name not in view.downloadable:
            raise UnsafePath(f"refused {name!r}: {event_id}'s {EVENT_FILE} does not list it")
        reader = self.source.open(view.ref, name)
        if reader.size > self.max_size:
            reader.close()
            raise CLIError(_too_large(view.ref, name, self.max_size))
        return view.ref, reader

    def _read(self, ref: EventRef, name: str, limit: int) -> bytes:
        data = self.source.read(ref, name, limit=limit + 1)
        if len(data) > limit:
            raise CLIError(_too_large(ref, name, limit))
        return data

    def _part(self, view: EventView, name: str) -> Part:
        part = Part(name)
        if name in TWINS:
            return self._dump(view, part)
        try:
            data = self._read(view.ref, name, self.max_size)
            if name.endswith(".pb.gz"):
                profile = _decode(data, self.max_size, name)
                view.profiles[name] = profile
                part.profile = profile_view(profile)
                part.title = f"{profile.sample_types[_column(profile)].type}, total " + (
                    part.profile.amount(part.profile.total)
                )
                return part
            part.text = data.decode("utf-8", "replace")
            part.title = "as written"
        except (CLIError, OSError) as exc:
            part.error = str(exc) if isinstance(exc, CLIError) else f"cannot read {name}: {exc}"
        return part

    def _dump(self, view: EventView, part: Part) -> Part:
        """A text dump's part from its JSON twin; else its text, shown as written."""

        def read(name: str, limit: int) -> bytes | None:
            if name not in view.downloadable:
                return None
            try:
                return self._read(view.ref, name, limit)
            except OSError as exc:
                raise CLIError(f"cannot read {name}: {exc}") from None

        try:
            dump = load_dump(part.name, read, self.max_size)
        except CLIError as exc:
            part.error = str(exc)
            return part
        part.notes += dump.problems[:NOTES]
        if len(dump.problems) > NOTES:
            part.notes.append(f"and {len(dump.problems) - NOTES:,} more values left out")
        data = dump.data
        if isinstance(data, ThreadDump):
            part.threads = thread_groups(data)
        elif isinstance(data, TaskDump):
            part.tasks = data
        elif isinstance(data, Census):
            part.census = data
        elif isinstance(data, HeapHolders):
            part.holders = data
        else:
            part.text = dump.text
            twin = TWINS[part.name][0]
            part.title = "as written" if dump.problems else f"as written (no {twin})"
            return part
        part.title = _title(part)
        return part

    # -- two events --

    def compare(self, a: str, b: str) -> tuple[EventView, EventView, list[Part]]:
        first, second = parallel_map(self.source, self.event, [a, b])
        extra = []
        heap_a, heap_b = first.profiles.get("heap.pb.gz"), second.profiles.get("heap.pb.gz")
        if heap_a is not None and heap_b is not None:
            extra.append(_site_diff(heap_a, heap_b, "heap.pb.gz a → b"))
        return first, second, extra


def _too_large(ref: EventRef, name: str, limit: int) -> str:
    return f"{ref.id}/{name}: larger than {mib(limit)}, the most holmespy reads"


def _title(part: Part) -> str:
    if part.threads is not None:
        return plural(sum(g.count for g in part.threads), "thread")
    if part.tasks is not None:
        return plural(part.tasks.total, "task")
    if part.census is not None:
        return "the type census"
    if part.holders is not None:
        return "who holds the memory"
    return "as written"


def _column(profile: Profile) -> int:
    try:
        return sample_index(profile)
    except ValueError as exc:
        raise CLIError(str(exc)) from None


def _decode(data: bytes, max_size: int, name: str) -> Profile:
    try:
        return decode(data, max_size=max_size)
    except ProfileTooLarge as exc:
        raise CLIError(f"{name}: {exc}; holmespy serve --max-size raises the limit") from None
    except ProfileFormatError as exc:
        raise CLIError(f"{name}: {exc}") from None


def profile_view(profile: Profile) -> ProfileView:
    index = _column(profile)
    with collector_paused():
        costs, total = hottest(profile, index)
        tree = tree_from_profile(profile, index)
    return ProfileView(profile.sample_types[index].unit, total, costs, tree)


def _site_diff(a: Profile, b: Profile, name: str) -> Part:
    """What each allocation site held in `a` and in `b`: those that held memory in both
    (a leak keeps it alive) first, then those that grew."""
    names = [vt.type for vt in a.sample_types]
    kind = "inuse_space" if "inuse_space" in names else names[-1] if names else ""
    try:
        changes = site_changes(a, b, kind)
    except CLIError as exc:
        return Part(name, error=str(exc))
    unit = "bytes" if kind.endswith("space") else "count"
    lines = [f"{'a':>12} {'b':>12} {'growth':>12}  allocation site"]
    for c in changes[:30]:
        lines.append(
            f"{quantity(c.before, unit):>12} {quantity(c.after, unit):>12}"
            f" {('+' if c.growth > 0 else '') + quantity(c.growth, unit):>12}  {c.name}"
        )
    return Part(name, title=f"{kind} by allocation site", text="\n".join(lines))
