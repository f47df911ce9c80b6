"""The census of live objects by type: one `Census`, written as `heap-types.txt` and `.json`.

`holmespy.profilers.heap.census` takes it; `text()` renders `heap-types.txt`
(for people) and `to_json()` `heap-types.json` (for `show`, `serve` and
`diff`), both in the same capture. The JSON keeps the rows the text shows
(the top types by count, the top growers, the top types by bytes) and the
totals, so a census read back renders the same text. Reading is strict
(`from_json`, `BadDump` in one line) or lenient (`read`: what is wrong is
left out and said), through `holmespy.dumpjson`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from holmespy import dumpjson
from holmespy.dumpjson import BadDump, Reader, Twin

__all__ = ["BLOB_MIN_BYTES", "FILE", "TEXT_FILE", "BadDump", "Census"]

FILE = "heap-types.json"
TEXT_FILE = "heap-types.txt"
SCHEMA = 1
BLOB_MIN_BYTES = 512
"""Untracked str/bytes/bytearray this big or bigger are found through who holds them."""
MAX_ROWS = 10_000
"""Types per column read at most (the writer keeps its `top`, 50)."""


@dataclass(frozen=True)
class Census(Twin):
    """Live gc-tracked objects by type, and their growth since the previous census."""

    FILE = FILE

    pid: int
    time: float
    """When the census started, Unix epoch seconds."""
    counts: Mapping[str, int]
    """Module-qualified type name -> live objects. Pass it as `previous` to the next census.
    Read back from JSON: the types the file lists, not every type."""
    growth: Mapping[str, int] | None
    """Type name -> change since `previous` (non-zero only); None without a previous census."""
    gc_counts: tuple[int, ...] = ()
    """`gc.get_count()`: allocations/collections since each generation was last collected."""
    gc_collections: tuple[int, ...] = ()
    """Collections of each generation since the process started."""
    frozen: int = 0
    """Objects moved out of the collector's view by `gc.freeze()`: not counted."""
    sizes: Mapping[str, int] = field(default_factory=dict)
    """Type name -> shallow bytes of its live objects (`sys.getsizeof`, without what they hold)."""
    blobs: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    """For str, bytes and bytearray (which the collector does not track): (objects, bytes) of
    those of at least `BLOB_MIN_BYTES` that a tracked object holds directly."""
    seconds: float = 0.0
    list_seconds: float = 0.0
    """The one uninterruptible step: `gc.get_objects()` holding the GIL."""
    top: int = 50
    error: str | None = None
    objects: int | None = None
    """Every live object counted; None: the sum of `counts` (which then has every type)."""
    types: int | None = None
    """Every type counted; None: the length of `counts`."""

    @property
    def total(self) -> int:
        return self.objects if self.objects is not None else sum(self.counts.values())

    @property
    def type_count(self) -> int:
        return self.types if self.types is not None else len(self.counts)

    @property
    def facts(self) -> dict[str, Any]:
        """A summary for `event.json`."""
        facts: dict[str, Any] = {
            "objects": self.total,
            "types": self.type_count,
            "seconds": round(self.seconds, 4),
            "max_gil_hold_seconds": round(self.list_seconds, 4),
        }
        if self.growth is not None:
            facts["top_growers"] = {n: g for n, g in _top(self.growth, 5) if g > 0}
        if self.error:
            facts["error"] = f"census failed: {self.error}"
        return facts

    def by_bytes(self) -> list[tuple[str, int, int]]:
        """(type, bytes, objects) of the top types by shallow bytes, the big untracked
        strings and bytes among them under their own names."""
        sizes = dict(self.sizes)
        counts = dict(self.counts)
        for name, (count, size) in self.blobs.items():
            label = f"{name} (>= {BLOB_MIN_BYTES} B, held by tracked objects)"
            sizes[label], counts[label] = size, count
        return [(name, size, counts.get(name, 0)) for name, size in _top(sizes, self.top)]

    def growers(self) -> list[tuple[str, int]]:
        """The types that grew most, with their growth; empty without a previous census."""
        return [(n, g) for n, g in _top(self.growth or {}, self.top) if g > 0]

    # -- heap-types.txt --

    def text(self) -> str:
        """`heap-types.txt`: header, the top types by count, then the top growers."""
        out = [
            f"holmespy heap census: pid {self.pid}, at {_iso(self.time)}, took {self.seconds:.3f} s"
            f" (gc.get_objects() held the GIL {self.list_seconds * 1000:.0f} ms)",
            f"objects: {self.total:,} in {self.type_count:,} types; gc counts"
            f" {_tuple(self.gc_counts)}, collections {_tuple(self.gc_collections)},"
            f" frozen {self.frozen:,}",
            "Counts only gc-tracked objects: class instances and containers; str, int, float,"
            " bytes and dicts or tuples holding only those are not tracked.",
        ]
        if self.error:
            out.append(f"!! census failed: {self.error}")
        growth = self.growth
        out.append("")
        if growth is None:
            out.append(f"top {self.top} types by count (no previous census to compare with):")
            out.append(f"{'count':>12}  type")
            for name, count in _top(self.counts, self.top):
                out.append(f"{count:>12,}  {name}")
            out.extend(self._bytes_section())
            return "\n".join(out) + "\n"
        out.append(f"top {self.top} types by count, with growth since the previous census:")
        out.append(f"{'count':>12} {'growth':>12}  type")
        for name, count in _top(self.counts, self.top):
            out.append(f"{count:>12,} {_signed(growth.get(name, 0)):>12}  {name}")
        growers = self.growers()
        out.append("")
        out.append(f"top growers since the previous census ({len(growers)} shown):")
        out.append(f"{'growth':>12} {'count':>12}  type")
        for name, change in growers:
            out.append(f"{_signed(change):>12} {self.counts.get(name, 0):>12,}  {name}")
        out.extend(self._bytes_section())
        return "\n".join(out) + "\n"

    def _bytes_section(self) -> list[str]:
        """Types by shallow bytes: a few large objects (a leaked bytearray) rank high here."""
        rows = self.by_bytes()
        if not rows:
            return []
        out = ["", f"top {self.top} types by shallow bytes (each object alone, not what it holds):"]
        out.append(f"{'bytes':>16} {'count':>12}  type")
        for name, size, count in rows:
            out.append(f"{size:>14,} B {count:>12,}  {name}")
        return out

    # -- heap-types.json --

    def to_json(self) -> dict[str, Any]:
        """The rows the text shows, and the totals: reading it back renders the same text."""
        shown = {n for n, _ in _top(self.counts, self.top)}
        growth = None
        if self.growth is not None:
            grew = {n for n, _ in _top(self.growth, self.top)}
            growth = {n: g for n, g in self.growth.items() if n in grew or n in shown}
            shown |= grew
        sizes = {n: s for n, s in _top(self.sizes, self.top)}
        shown |= sizes.keys()
        return {
            "schema": SCHEMA,
            "pid": self.pid,
            "time": self.time,
            "seconds": self.seconds,
            "list_seconds": self.list_seconds,
            "objects": self.total,
            "types": self.type_count,
            "gc_counts": list(self.gc_counts),
            "gc_collections": list(self.gc_collections),
            "frozen": self.frozen,
            "top": self.top,
            "error": self.error,
            "counts": {n: c for n, c in self.counts.items() if n in shown},
            "growth": growth,
            "sizes": sizes,
            "blobs": {n: list(pair) for n, pair in self.blobs.items()},
        }

    @classmethod
    def _read(cls, data: object, r: Reader) -> Census:
        if not isinstance(data, dict):
            raise BadDump(f"{FILE}: not a JSON object")
        r.schema(data, SCHEMA)
        d = dumpjson
        growth = data.get("growth")
        return cls(
            pid=r.field(lambda: d.integer(data, "pid"), 0),
            time=r.field(lambda: d.number(data, "time"), 0.0),
            counts=r.field(lambda: d.counts(data.get("counts"), "counts", MAX_ROWS), {}),
            growth=None
            if growth is None
            else r.field(
                lambda: d.counts(growth, "growth", MAX_ROWS, signed=True), dict[str, int]()
            ),
            gc_counts=r.field(lambda: d.ints(data.get("gc_counts", []), "gc_counts", 8), ()),
            gc_collections=r.field(
                lambda: d.ints(data.get("gc_collections", []), "gc_collections", 8), ()
            ),
            frozen=r.field(lambda: d.integer(data, "frozen"), 0),
            sizes=r.field(lambda: d.counts(data.get("sizes", {}), "sizes", MAX_ROWS), {}),
            blobs=r.field(lambda: _blobs(data.get("blobs", {})), {}),
            seconds=r.field(lambda: d.number(data, "seconds"), 0.0),
            list_seconds=r.field(lambda: d.number(data, "list_seconds"), 0.0),
            top=r.field(lambda: min(d.integer(data, "top", default=50), MAX_ROWS), 50),
            error=r.field(lambda: d.optional_text(data, "error"), None),
            objects=r.field(lambda: d.optional_int(data, "objects"), None),
            types=r.field(lambda: d.optional_int(data, "types"), None),
        )


def _blobs(value: object) -> dict[str, tuple[int, int]]:
    found = dumpjson.obj(value, "blobs")
    if len(found) > 16:  # str, bytes and bytearray: three
        raise dumpjson.Wrong(f"blobs: {len(found):,} entries, more than 16")
    out = {}
    for name, pair in found.items():
        where = f"blobs.{name[:40]}"
        numbers = dumpjson.ints(pair, where, 2)
        if len(numbers) != 2:
            raise dumpjson.wrong(where, pair, "[objects, bytes]")
        out[name[: dumpjson.MAX_NAME]] = (numbers[0], numbers[1])
    return out


def _iso(epoch: float) -> str:
    try:
        moment = dt.datetime.fromtimestamp(epoch, dt.UTC)
    except (OverflowError, OSError, ValueError):  # a time read back from a forged file
        return "?"
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "") + "Z"


def _signed(change: int) -> str:
    return f"{change:+,}" if change else "0"


def _tuple(values: tuple[int, ...]) -> str:
    return "(" + ", ".join(f"{v:,}" for v in values) + ")"


def _top(counts: Mapping[str, int], n: int) -> list[tuple[str, int]]:
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:n]
