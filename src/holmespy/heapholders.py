"""Who holds the memory, as data: one `HeapHolders`, written as `heap-holders.txt` and `.json`.

`holmespy.profilers.holders` walks the heap into a `HeapHolders`; `render`
writes `heap-holders.txt` (for people) and `to_json()` `heap-holders.json`
(for `show`, `serve` and `diff`), both in the same capture. Growth since the
previous snapshot of the process is part of the data (`compared`), so a
snapshot read back renders the same text without the baseline it was
compared with. The JSON keeps what the text shows: the top types, the
listed holders (`listed`) and who holds the top types.

Reading is strict (`from_json`: `BadDump` in one line) or lenient (`read`:
a holder, type or share with a wrong value is left out and said), through
`holmespy.dumpjson`. Labels and type names are stored as the walk wrote
them, escaped by `holmespy.printable`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from holmespy import dumpjson
from holmespy.dumpjson import BadDump, Reader, Twin, Wrong

__all__ = [
    "FILE",
    "TEXT_FILE",
    "BadDump",
    "Baseline",
    "HeapHolders",
    "Holder",
    "Share",
    "TypeTotal",
    "render",
    "size_text",
]

FILE = "heap-holders.json"
TEXT_FILE = "heap-holders.txt"
SCHEMA = 1
MAX_ROWS = 10_000
"""Types, holders or shares read at most (the writer keeps a few dozen)."""
MAX_TYPES_PER_ROW = 100
HEADER = "holmespy heap holders"
TOP_TYPES_SHOWN = 30
TOP_HOLDERS_SHOWN = 20
TOP_GROWERS_SHOWN = 10
IN_SHORT = 5

METHOD = "in-process walk in short steps"
WHY = (
    "the walk marks visited objects in a bitmap (about 1 % of RSS) and lets host threads"
    " run between its steps; a forked child would instead copy every memory page whose"
    " objects it visits (their reference counts change), about the whole Python heap,"
    " at the moment a memory rule fires"
)

NAMESPACES = "interpreter"
MODULE_GLOBAL = "module global"
CLASS_ATTRIBUTE = "class attribute"
THREAD_STACK = "thread stack"
GC_ONLY = "gc only"
OTHERS = "others"


# -- the result -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TypeTotal:
    name: str
    objects: int
    bytes: int
    growth: tuple[int, int] | None = None
    """(objects, bytes) gained since the previous snapshot; None without one."""


@dataclass(frozen=True)
class Share:
    """What one holder holds of one type."""

    holder: str
    type: str
    objects: int
    bytes: int


@dataclass(frozen=True)
class Holder:
    label: str
    """`module.NAME`, `module.Class.attr`, `thread "name" module.function local 'x'`, ..."""
    kind: str
    """MODULE_GLOBAL, CLASS_ATTRIBUTE, THREAD_STACK, GC_ONLY, NAMESPACES or OTHERS."""
    type: str
    """Type of the root object itself ('dict'); '' for a line that sums several roots."""
    objects: int
    bytes: int
    types: tuple[TypeTotal, ...]
    """What it holds, by bytes, largest first (the top few)."""
    aliases: tuple[str, ...] = ()
    """Other roots that name the same object (`from app.sessions import REGISTRY`)."""
    roots: int = 1
    """Roots summed into this line (more than one for OTHERS and GC_ONLY lines)."""
    growth: tuple[int, int, bool] | None = None
    """(objects, bytes, bound) gained since the previous snapshot; `bound` when the previous
    figure is only a ceiling (the holder was below the ones kept). None without one."""

    @property
    def named(self) -> bool:
        """A root a person can act on, not the interpreter's or a sum of small ones."""
        return self.kind not in (OTHERS, NAMESPACES)

    @property
    def about(self) -> str:
        """Its type and kind, how many roots, its other names: the line under its label."""
        about = f"{self.type}, {self.kind}" if self.type else self.kind
        if self.roots != 1:
            about += f", {self.roots:,} roots"
        if self.aliases:
            about += "; also " + ", ".join(self.aliases)
        return about


@dataclass(frozen=True)
class Baseline:
    """What the next snapshot of this process compares itself with (kept between events)."""

    time: float
    types: Mapping[str, tuple[int, int]]
    """Type -> (objects, bytes), every type."""
    holders: Mapping[str, tuple[int, int]]
    """Holder label -> (objects, bytes), the largest holders only."""
    holder_floor: int
    """Bytes of the smallest holder in `holders`: one not listed held at most this much."""


@dataclass(frozen=True)
class HeapHolders(Twin):
    pid: int
    time: float
    """When the walk started, Unix epoch seconds."""

    FILE = FILE
    seconds: float
    objects: int
    bytes: int
    roots: int
    types: tuple[TypeTotal, ...]
    """Every type reached, by bytes, largest first."""
    holders: tuple[Holder, ...]
    """Every holder of at least `SMALL_HOLDER` bytes, by bytes, then one OTHERS line per kind."""
    shares: Mapping[str, tuple[Share, ...]]
    """For the types that hold most bytes or grew most: their holders, by bytes."""
    method: str = METHOD
    why: str = WHY
    longest_step_seconds: float = 0.0
    """The longest single C call (listing the gc's objects, expanding the biggest container)."""
    gc_only_candidates: int = 0
    own_objects: int = 0
    """Objects only holmespy's own threads and this walk hold: walked, not counted."""
    partial: str | None = None
    """Why the walk stopped before reaching everything, when it did."""
    error: str | None = None
    previous_time: float | None = None
    """When the snapshot this one was `compared` with was taken; None: no growth."""
    type_count: int | None = None
    """Every type reached; None: the length of `types` (which then has every type)."""

    def baseline(self, keep: int = 500) -> Baseline:
        named = [h for h in self.holders if h.kind != OTHERS]
        kept = sorted(named, key=lambda h: -h.bytes)[:keep]
        return Baseline(
            time=self.time,
            types={t.name: (t.objects, t.bytes) for t in self.types},
            holders={h.label: (h.objects, h.bytes) for h in kept},
            holder_floor=kept[-1].bytes if len(named) > keep else 0,
        )

    def compared(self, previous: Baseline) -> HeapHolders:
        """This snapshot with its growth since `previous` on every type and holder."""
        types = tuple(
            replace(t, growth=_minus((t.objects, t.bytes), previous.types.get(t.name, (0, 0))))
            for t in self.types
        )
        holders = []
        for h in self.holders:
            before = previous.holders.get(h.label)
            if h.kind == OTHERS:
                growth = None
            elif before is not None:
                growth = (h.objects - before[0], h.bytes - before[1], False)
            else:
                growth = (h.objects, h.bytes - previous.holder_floor, previous.holder_floor > 0)
            holders.append(replace(h, growth=growth))
        return replace(self, types=types, holders=tuple(holders), previous_time=previous.time)

    def type_growth(self, name: str) -> tuple[int, int] | None:
        """(objects, bytes) gained since the previous snapshot; None without one."""
        return next((t.growth for t in self.types if t.name == name), None)

    def holder_growth(self, holder: Holder) -> tuple[int, int, bool] | None:
        """(objects, bytes, bound) gained; `bound` when the previous figure is only a ceiling."""
        return holder.growth

    def listed(self) -> list[Holder]:
        """The holders the text lists: the largest, those that grew most, then the summed
        small ones."""
        named = [h for h in self.holders if h.kind != OTHERS]
        shown = named[:TOP_HOLDERS_SHOWN]
        if self.previous_time is not None:

            def grew(holder: Holder) -> int:
                return holder.growth[1] if holder.growth is not None else 0

            rest = sorted(named[TOP_HOLDERS_SHOWN:], key=lambda h: -grew(h))
            shown += [h for h in rest[:TOP_GROWERS_SHOWN] if grew(h) > 0]
        return shown + [h for h in self.holders if h.kind == OTHERS]

    # -- heap-holders.json --

    def to_json(self) -> dict[str, Any]:
        """What the text shows: reading it back renders the same text."""
        kept = {t.name for t in self.types[:TOP_TYPES_SHOWN]} | set(self.shares)
        return {
            "schema": SCHEMA,
            "pid": self.pid,
            "time": self.time,
            "seconds": self.seconds,
            "objects": self.objects,
            "bytes": self.bytes,
            "roots": self.roots,
            "method": self.method,
            "why": self.why,
            "longest_step_seconds": self.longest_step_seconds,
            "gc_only_candidates": self.gc_only_candidates,
            "own_objects": self.own_objects,
            "partial": self.partial,
            "error": self.error,
            "previous_time": self.previous_time,
            "type_count": self.type_count if self.type_count is not None else len(self.types),
            "types": [_type_json(t) for t in self.types if t.name in kept],
            "holders": [_holder_json(h) for h in self.listed()],
            "shares": [
                {"type": name, "holders": [[s.holder, s.objects, s.bytes] for s in shares]}
                for name, shares in self.shares.items()
            ],
        }

    @classmethod
    def _read(cls, data: object, r: Reader) -> HeapHolders:
        if not isinstance(data, dict):
            raise BadDump(f"{FILE}: not a JSON object")
        r.schema(data, SCHEMA)
        d = dumpjson
        shares = r.items(data, "shares", MAX_ROWS, _shares)
        return cls(
            pid=r.field(lambda: d.integer(data, "pid"), 0),
            time=r.field(lambda: d.number(data, "time"), 0.0),
            seconds=r.field(lambda: d.number(data, "seconds"), 0.0),
            objects=r.field(lambda: d.integer(data, "objects"), 0),
            bytes=r.field(lambda: d.integer(data, "bytes"), 0),
            roots=r.field(lambda: d.integer(data, "roots"), 0),
            types=r.items(data, "types", MAX_ROWS, _type),
            holders=r.items(data, "holders", MAX_ROWS, _holder),
            shares=dict(shares),
            method=r.field(lambda: d.optional_text(data, "method") or "?", "?"),
            why=r.field(lambda: d.optional_text(data, "why") or "", ""),
            longest_step_seconds=r.field(lambda: d.number(data, "longest_step_seconds"), 0.0),
            gc_only_candidates=r.field(lambda: d.integer(data, "gc_only_candidates"), 0),
            own_objects=r.field(lambda: d.integer(data, "own_objects"), 0),
            partial=r.field(lambda: d.optional_text(data, "partial"), None),
            error=r.field(lambda: d.optional_text(data, "error"), None),
            previous_time=r.field(lambda: d.optional_number(data, "previous_time"), None),
            type_count=r.field(lambda: d.optional_int(data, "type_count"), None),
        )

    @property
    def facts(self) -> dict[str, Any]:
        """A summary for `event.json`."""
        facts: dict[str, Any] = {
            "method": self.method,
            "why": self.why,
            "objects": self.objects,
            "bytes": self.bytes,
            "roots": self.roots,
            "seconds": round(self.seconds, 4),
            "longest_step_seconds": round(self.longest_step_seconds, 4),
            "top_holders": [
                {"holder": h.label, "objects": h.objects, "bytes": h.bytes}
                for h in [h for h in self.holders if h.kind not in (OTHERS, NAMESPACES)][:5]
            ],
        }
        if self.partial:
            facts["partial"] = self.partial
        if self.error:
            facts["error"] = f"holder walk failed: {self.error}"
        return facts


# -- heap-holders.txt -------------------------------------------------------------------------


def render(snapshot: HeapHolders) -> str:
    """`heap-holders.txt`: a summary in sentences, then tables with exact figures.

    Readers read `heap-holders.json` instead: nothing parses this text back.
    """
    s = snapshot
    out = _preamble(s)
    out += ["", "in short:"]
    named = [h for h in s.holders if h.kind not in (OTHERS, NAMESPACES)][:IN_SHORT]
    out += ["  " + _sentence(s, h) for h in named] or ["  no holder"]
    out += ["", *_types_table(s)]
    listed = s.listed()
    grown = s.previous_time is not None
    out += [
        "",
        f"holders by bytes (the top {TOP_HOLDERS_SHOWN}"
        + (f", then up to {TOP_GROWERS_SHOWN} more that grew most" if grown else "")
        + ", then the small ones summed by kind):",
    ]
    for rank, holder in enumerate(listed, 1):
        out += _holder_block(s, rank, holder)
    if s.shares:
        out += ["", "who holds the types with the most bytes" + (" or growth:" if grown else ":")]
        for type_name, shares in s.shares.items():
            out += _share_block(s, type_name, shares)
    return "\n".join(out) + "\n"


def _preamble(s: HeapHolders) -> list[str]:
    out = [
        f"{HEADER}: pid {s.pid}, at {_iso(s.time)}, took {s.seconds:.2f} s",
        f"walk: {s.method}, longest uninterruptible step {s.longest_step_seconds * 1000:.0f} ms",
        f"why: {s.why}",
        f"reached: {s.objects:,} objects, {s.bytes:,} bytes ({size_text(s.bytes)})"
        f" from {s.roots:,} roots; {s.own_objects:,} objects only holmespy holds are not counted",
    ]
    if s.previous_time is not None:
        earlier = s.time - s.previous_time
        out.append(f"previous snapshot: {_iso(s.previous_time)}, {earlier:,.0f} s earlier")
    else:
        out.append("previous snapshot: none in this process, so no growth is shown")
    out.append(
        "How to read it: each object counts once, under the nearest root that reaches it"
        " (breadth-first from every root at once; ties go to module globals, then class"
        " attributes, then thread stacks). This approximates a dominator tree: a holder's"
        " figures are what it reaches first, not exactly what would be freed without it."
        " Sizes are sys.getsizeof(): each object's own bytes. Objects the collector does not"
        " track (str, bytes, dicts of plain values...) are counted through their containers."
    )
    if s.partial:
        out.append(f"!! partial: {s.partial}")
    if s.error:
        out.append(f"!! failed: {s.error}")
    return out


def _types_table(s: HeapHolders) -> list[str]:
    grown = s.previous_time is not None
    count = s.type_count if s.type_count is not None else len(s.types)
    out = [f"types by bytes (top {TOP_TYPES_SHOWN} of {count:,}):"]
    header = f"{'bytes':>16} {'objects':>12}"
    header += f" {'growth bytes':>16} {'growth objects':>14}" if grown else ""
    out.append(header + "  type")
    for t in s.types[:TOP_TYPES_SHOWN]:
        row = f"{t.bytes:>16,} {t.objects:>12,}"
        change = s.type_growth(t.name)
        if change is not None:
            row += f" {_signed(change[1]):>16} {_signed(change[0]):>14}"
        out.append(f"{row}  {t.name}")
    return out


def _share_block(s: HeapHolders, type_name: str, shares: tuple[Share, ...]) -> list[str]:
    total = next((t for t in s.types if t.name == type_name), TypeTotal(type_name, 0, 0))
    line = (
        f"type {type_name}: {total.objects:,} objects, {total.bytes:,} bytes"
        f" ({size_text(total.bytes)})"
    )
    change = s.type_growth(type_name)
    if change is not None:
        line += f"; growth {_signed(change[0])} objects, {_signed(change[1])} bytes"
    out = [line, f"{'bytes':>16} {'objects':>12}  holder"]
    return out + [f"{share.bytes:>16,} {share.objects:>12,}  {share.holder}" for share in shares]


def _sentence(s: HeapHolders, holder: Holder) -> str:
    text = (
        f"{holder.label} ({_a(holder.type)}, {holder.kind}) holds"
        f" {holder.objects:,} objects, {size_text(holder.bytes)}"
    )
    if holder.types:
        text += ": " + ", ".join(
            f"{t.objects:,} {t.name} {size_text(t.bytes)}" for t in holder.types[:3]
        )
    change = s.holder_growth(holder)
    if change is not None and (change[0] or change[1]):
        mark = ">=" if change[2] else ""
        text += f"; grew {mark}{_signed(change[0])} objects, {mark}{_signedsize_text(change[1])}"
    elif change is not None:
        text += "; unchanged"
    return text


def _holder_block(s: HeapHolders, rank: int, holder: Holder) -> list[str]:
    about = holder.about
    holds = f"holds {holder.objects:,} objects, {holder.bytes:,} bytes ({size_text(holder.bytes)})"
    change = s.holder_growth(holder)
    if change is not None:
        mark = ">=" if change[2] else ""
        holds += f"; growth {mark}{_signed(change[0])} objects, {mark}{_signed(change[1])} bytes"
    lines = [f"[{rank}] {holder.label}", f"    {about}", f"    {holds}"]
    lines += [f"{t.bytes:>16,} {t.objects:>12,}  {t.name}" for t in holder.types]
    return lines


def _a(type_name: str) -> str:
    return f"a {type_name}" if type_name else "several"


def _signed(value: int) -> str:
    return f"{value:+,}" if value else "0"


def _signedsize_text(value: int) -> str:
    return ("+" if value > 0 else "-" if value < 0 else "") + size_text(abs(value))


def size_text(value: float) -> str:
    """Bytes in the largest binary unit: `1.5 MiB`."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(value) >= scale:
            return f"{value / scale:.1f} {unit}"
    return f"{value:.0f} B"


def _iso(epoch: float) -> str:
    try:
        moment = dt.datetime.fromtimestamp(epoch, dt.UTC)
    except (OverflowError, OSError, ValueError):  # a time read back from a forged file
        return "?"
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "") + "Z"


def _minus(now: tuple[int, int], before: tuple[int, int]) -> tuple[int, int]:
    return now[0] - before[0], now[1] - before[1]


def _type_json(t: TypeTotal) -> list[Any]:
    return [t.name, t.objects, t.bytes, None if t.growth is None else list(t.growth)]


def _holder_json(h: Holder) -> dict[str, Any]:
    return {
        "label": h.label,
        "kind": h.kind,
        "type": h.type,
        "objects": h.objects,
        "bytes": h.bytes,
        "types": [_type_json(t) for t in h.types],
        "aliases": list(h.aliases),
        "roots": h.roots,
        "growth": None if h.growth is None else list(h.growth),
    }


def _type(item: object, where: str) -> TypeTotal:
    d = dumpjson
    if not isinstance(item, list) or len(item) != 4 or not isinstance(item[0], str):
        raise d.wrong(where, item, "[type, objects, bytes, growth]")
    growth = None
    if item[3] is not None:
        pair = d.array(item[3], where + ".growth", 2)
        if len(pair) != 2:
            raise d.wrong(where + ".growth", item[3], "[objects, bytes]")
        growth = (d.as_int(pair[0], where, signed=True), d.as_int(pair[1], where, signed=True))
    return TypeTotal(
        item[0][: d.MAX_NAME], d.as_int(item[1], where), d.as_int(item[2], where), growth
    )


def _holder(item: object, where: str) -> Holder:
    d = dumpjson
    data = d.obj(item, where)
    at = where + "."
    types = d.array(data.get("types", []), at + "types", MAX_TYPES_PER_ROW)
    aliases = d.array(data.get("aliases", []), at + "aliases", MAX_TYPES_PER_ROW)
    growth = None
    if data.get("growth") is not None:
        value = d.array(data["growth"], at + "growth", 3)
        if len(value) != 3 or type(value[2]) is not bool:
            raise d.wrong(at + "growth", value, "[objects, bytes, bound]")
        growth = (
            d.as_int(value[0], at + "growth", signed=True),
            d.as_int(value[1], at + "growth", signed=True),
            value[2],
        )
    if not all(isinstance(a, str) for a in aliases):
        raise Wrong(f"{at}aliases: not a list of strings")
    return Holder(
        label=d.text(data, "label", at),
        kind=d.text(data, "kind", at),
        type=d.text(data, "type", at),
        objects=d.integer(data, "objects", at),
        bytes=d.integer(data, "bytes", at),
        types=tuple(_type(t, f"{at}types[{n}]") for n, t in enumerate(types)),
        aliases=tuple(a[: d.MAX_NAME] for a in aliases),
        roots=d.integer(data, "roots", at, default=1),
        growth=growth,
    )


def _shares(item: object, where: str) -> tuple[str, tuple[Share, ...]]:
    d = dumpjson
    data = d.obj(item, where)
    name = d.text(data, "type", where + ".")
    held = []
    for n, row in enumerate(d.array(data.get("holders"), where + ".holders", MAX_TYPES_PER_ROW)):
        at = f"{where}.holders[{n}]"
        if not isinstance(row, list) or len(row) != 3 or not isinstance(row[0], str):
            raise d.wrong(at, row, "[holder, objects, bytes]")
        held.append(Share(row[0][: d.MAX_NAME], name, d.as_int(row[1], at), d.as_int(row[2], at)))
    return name, tuple(held)
