"""The event, typed: what one `event.json` says, read and written in one place.

The watcher builds an `Event` when a rule fires and writes it with
`to_json`; `show`, `serve` and the uploader read one back with `from_json`
(strict: the first value of a wrong type is a `BadEvent`, one line naming the
field) or `read` (lenient: a field of a wrong type is left out and said in
`problems`, so a damaged bundle still shows what it can). Either way no
caller ever meets a value of a type it did not ask for.

`schema` numbers the layout. Files written before it existed have none and
are version 1, which is the layout of today; a newer number is read as far
as its fields are known. Keys this module does not know are kept in `extra`
and written back, so reading and writing an event loses nothing.

Strings are kept as written, control characters included: escaping belongs
to whoever shows them (a terminal, a web page), and an error message quotes
a value only through `holmespy.printable`.
"""

from __future__ import annotations

import json
import math
import reprlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from holmespy.manifest import EVENT_FILE, MAX_DEPTH, MAX_EVENT_JSON, MAX_FILES
from holmespy.printable import printable

SCHEMA = 1
"""The layout this holmespy writes; files without a `schema` are version 1."""
MAX_HISTORY = 100_000
"""History points read at most; the watcher's ring holds 10 (plus the firing one)."""
MAX_CAPTURES = 64
MAX_LACKS = 64

T = TypeVar("T")

_short = reprlib.Repr()
_short.maxstring = 40
_short.maxother = 40
_short.maxlist = 3
_short.maxdict = 3


class BadEvent(ValueError):
    """An `event.json` whose content is not an event: the message is one line saying why."""


def load_json(raw: bytes) -> Any:
    """`raw` parsed as an `event.json` may be: at most 4 MiB and 32 levels deep; NaN,
    Infinity and numbers beyond a float are read as None (an invalid value), never as
    numbers. `BadEvent` (one line) otherwise."""
    if len(raw) > MAX_EVENT_JSON:
        raise BadEvent(f"larger than {MAX_EVENT_JSON >> 20} MiB")
    try:
        value = json.loads(
            raw,
            parse_constant=lambda name: None,
            parse_float=_finite_float,
            parse_int=_float_sized_int,
        )
    except RecursionError:
        raise BadEvent(f"nested deeper than {MAX_DEPTH} levels") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadEvent(f"not JSON ({exc})") from None
    if _depth(value) > MAX_DEPTH:
        raise BadEvent(f"nested deeper than {MAX_DEPTH} levels")
    return value


def _finite_float(text: str) -> float | None:
    value = float(text)
    return value if math.isfinite(value) else None


def _float_sized_int(text: str) -> int | None:
    # int() of thousands of digits is slow and raises past 4,300: length first.
    if len(text.lstrip("-")) > 400:
        return None
    value = int(text)
    return value if abs(value) < 2**1023 else None


def _depth(value: Any) -> int:
    """How deeply `value` nests, without recursion (its size is bounded already)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, depth)
            if depth > MAX_DEPTH:
                return depth
            stack.extend((child, depth + 1) for child in item)
    return deepest


def kind_of(value: object) -> str:
    """What a JSON value is, in words (for one-line errors)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


class _Reader:
    """Checks values one field at a time; strict raises at the first problem, lenient notes it."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.problems: list[str] = []

    def problem(self, where: str, message: str) -> None:
        text = printable(f"{where}: {message}", 200)
        if self.strict:
            raise BadEvent(f"{EVENT_FILE}: {text}")
        self.problems.append(text)

    def wrong(self, where: str, value: object, wanted: str) -> None:
        self.problem(where, f"{kind_of(value)} ({_short.repr(value)}), not {wanted}")

    def text(self, data: Mapping[str, Any], key: str, where: str = "") -> str | None:
        value = data.get(key)
        if value is None or isinstance(value, str):
            return value
        self.wrong(where + key, value, "a string")
        return None

    def number(self, data: Mapping[str, Any], key: str, where: str = "") -> float | None:
        value = data.get(key)
        if value is None:
            return None
        if isinstance(value, int | float) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:
                number = math.inf
            if math.isfinite(number):
                return value  # ints stay ints: 40 threads, not 40.0
            self.problem(where + key, "not a finite number")
            return None
        self.wrong(where + key, value, "a number")
        return None

    def integer(self, data: Mapping[str, Any], key: str, where: str = "") -> int | None:
        value = data.get(key)
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**63:
            return value
        self.wrong(where + key, value, "an integer")
        return None

    def obj(self, data: Mapping[str, Any], key: str, where: str = "") -> dict[str, Any] | None:
        value = data.get(key)
        if value is None or isinstance(value, dict):
            return value
        self.wrong(where + key, value, "an object")
        return None

    def array(
        self, data: Mapping[str, Any], key: str, limit: int, where: str = ""
    ) -> list[Any] | None:
        value = data.get(key)
        if value is None:
            return None
        if not isinstance(value, list):
            self.wrong(where + key, value, "a list")
            return None
        if len(value) > limit:
            self.problem(where + key, f"{len(value):,} entries, more than {limit:,}")
            return value[-limit:]  # the newest: history ends with the firing sample
        return value

    def each(
        self, items: list[Any], where: str, read: Callable[[_Reader, dict[str, Any], str], T | None]
    ) -> tuple[T, ...]:
        out = []
        for n, item in enumerate(items):
            at = f"{where}[{n}]"
            if not isinstance(item, dict):
                self.wrong(at, item, "an object")
                continue
            value = read(self, item, at + ".")
            if value is not None:
                out.append(value)
        return tuple(out)


@dataclass(frozen=True)
class Versions:
    python: str | None = None
    implementation: str | None = None
    holmespy: str | None = None
    lacks: dict[str, str] = field(default_factory=dict)
    """Feature -> what this Python or install could not give (see `holmespy.support`)."""

    @classmethod
    def _read(cls, r: _Reader, data: dict[str, Any], at: str) -> Versions:
        lacks: dict[str, str] = {}
        given = r.obj(data, "lacks", at) or {}
        if len(given) > MAX_LACKS:
            r.problem(at + "lacks", f"{len(given):,} entries, more than {MAX_LACKS}")
        for name, why in list(given.items())[:MAX_LACKS]:
            if isinstance(why, str):
                lacks[name] = why
            else:
                r.wrong(f"{at}lacks.{name}", why, "a string")
        return cls(
            r.text(data, "python", at),
            r.text(data, "implementation", at),
            r.text(data, "holmespy", at),
            lacks,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "python": self.python,
            "implementation": self.implementation,
            "holmespy": self.holmespy,
            "lacks": dict(self.lacks),
        }


@dataclass(frozen=True)
class Thresholds:
    """The rule as it stood when it fired, and the average its `diff` compared with."""

    min: float | None = None
    diff: float | None = None
    abs: float | None = None
    max: float | None = None
    cooldown: float | None = None
    """Seconds."""
    limit: str | None = None
    """`N/WINDOW`, as HOLMES_* settings write it: `5/1h`."""
    average: float | None = None
    """Of the samples before the firing one; None before the warm-up."""
    cpu_max: float | None = None

    @property
    def fired_at(self) -> float | None:
        """The level the average + diff comparison fired at, when both are known."""
        if self.average is None or self.diff is None:
            return None
        level = self.average * (100 + self.diff) / 100
        return level if math.isfinite(level) else None

    @classmethod
    def _read(cls, r: _Reader, data: dict[str, Any], at: str) -> Thresholds:
        n = r.number
        return cls(
            n(data, "min", at),
            n(data, "diff", at),
            n(data, "abs", at),
            n(data, "max", at),
            n(data, "cooldown", at),
            r.text(data, "limit", at),
            n(data, "average", at),
            n(data, "cpu_max", at),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "min": self.min,
            "diff": self.diff,
            "abs": self.abs,
            "max": self.max,
            "cooldown": self.cooldown,
            "limit": self.limit,
            "average": self.average,
            "cpu_max": self.cpu_max,
        }


@dataclass(frozen=True)
class Point:
    """One sample of the rule's metric: ISO 8601 UTC time, and the value (None: invalid)."""

    time: str | None
    value: float | None

    @classmethod
    def _read(cls, r: _Reader, data: dict[str, Any], at: str) -> Point:
        return cls(r.text(data, "time", at), r.number(data, "value", at))

    def to_json(self) -> dict[str, Any]:
        return {"time": self.time, "value": self.value}


@dataclass(frozen=True)
class ProcessLimits:
    """What the process could use: CPU cores and memory bytes, and where each came from."""

    cpu_cores: float | None = None
    cpu_source: str | None = None
    mem_bytes: int | None = None
    mem_source: str | None = None

    @classmethod
    def _read(cls, r: _Reader, data: dict[str, Any], at: str) -> ProcessLimits:
        return cls(
            r.number(data, "cpu_cores", at),
            r.text(data, "cpu_source", at),
            r.integer(data, "mem_bytes", at),
            r.text(data, "mem_source", at),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "cpu_cores": self.cpu_cores,
            "cpu_source": self.cpu_source,
            "mem_bytes": self.mem_bytes,
            "mem_source": self.mem_source,
        }


@dataclass(frozen=True)
class CaptureFacts:
    """What one capture said about itself; `facts` keeps every key, known or not."""

    file: str | None = None
    error: str | None = None
    engine: str | None = None
    why: str | None = None
    skipped: str | None = None
    cut_short: bool = False
    started_after: float | None = None
    """Seconds after the rule fired."""
    ended_after: float | None = None
    facts: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def _read(cls, r: _Reader, data: dict[str, Any], at: str) -> CaptureFacts:
        cut = data.get("cut_short", False)
        if not isinstance(cut, bool):
            r.wrong(at + "cut_short", cut, "a boolean")
            cut = False
        return cls(
            r.text(data, "file", at),
            r.text(data, "error", at),
            r.text(data, "engine", at),
            r.text(data, "why", at),
            r.text(data, "skipped", at),
            cut,
            r.number(data, "started_after", at),
            r.number(data, "ended_after", at),
            dict(data),
        )

    def to_json(self) -> dict[str, Any]:
        return dict(self.facts)


@dataclass(frozen=True)
class FileEntry:
    """A file of the bundle as `event.json` lists it. The name is only known to be a string:
    whoever opens it checks it is a plain name (`holmespy.manifest`, `cli.source.member_path`)."""

    name: str
    size: int | None = None
    sha256: str | None = None

    @classmethod
    def _read(cls, r: _Reader, data: dict[str, Any], at: str) -> FileEntry | None:
        name = data.get("name")
        if not isinstance(name, str):
            r.wrong(at + "name", name, "a string")
            return None
        size = r.integer(data, "size", at)
        if size is not None and size < 0:
            r.problem(at + "size", "negative")
            size = None
        if r.strict and (size is None or data.get("sha256") is None):
            r.problem(at.rstrip("."), "lists no size or sha256")
        return cls(name, size, r.text(data, "sha256", at))

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "size": self.size, "sha256": self.sha256}


_KNOWN = frozenset(
    [
        "schema",
        "id",
        "service",
        "host",
        "pid",
        "versions",
        "rule",
        "reason",
        "value",
        "unit",
        "thresholds",
        "time",
        "history",
        "sample",
        "limits",
        "captures",
        "partial",
        "partial_reason",
        "salvaged",
        "files",
    ]
)


@dataclass(frozen=True)
class Event:
    """One trigger. Fields that were absent from the file are None (or empty)."""

    id: str
    service: str
    rule: str
    schema: int = SCHEMA
    host: str | None = None
    pid: int | None = None
    versions: Versions | None = None
    reason: str | None = None
    value: float | None = None
    unit: str | None = None
    thresholds: Thresholds | None = None
    time: str | None = None
    """ISO 8601 UTC, milliseconds: `2026-11-24T03:54:12.123Z`."""
    history: tuple[Point, ...] | None = None
    """The rule's ring, oldest first, the firing sample last."""
    sample: dict[str, float | None] | None = None
    """The whole sample of the tick that fired (every metric, not only this rule's)."""
    limits: ProcessLimits | None = None
    captures: dict[str, CaptureFacts] | None = None
    partial: bool = False
    partial_reason: str | None = None
    salvaged: dict[str, Any] | None = None
    files: tuple[FileEntry, ...] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    """Keys this holmespy does not know (a newer writer's), kept to be written back."""

    # -- reading --

    @classmethod
    def from_json(cls, data: object) -> Event:
        """The event `data` (parsed JSON) describes, or `BadEvent` at the first wrong value."""
        event, _ = cls._parse(data, strict=True)
        return event

    @classmethod
    def read(cls, data: object) -> tuple[Event, list[str]]:
        """The event as far as `data` makes sense, and one line per value left out.

        Only a non-object is a `BadEvent`: anything inside is kept when it has
        its type and dropped (and said) when not.
        """
        return cls._parse(data, strict=False)

    @classmethod
    def _parse(cls, data: object, *, strict: bool) -> tuple[Event, list[str]]:
        if not isinstance(data, dict):
            raise BadEvent(f"{EVENT_FILE}: {kind_of(data)}, not a JSON object")
        r = _Reader(strict)
        schema = data.get("schema", 1)
        if not isinstance(schema, int) or isinstance(schema, bool) or schema < 1:
            r.wrong("schema", schema, "a version number")
            schema = 1
        ids = {}
        for key in ("id", "service", "rule"):
            value = r.text(data, key)
            if value is None and strict:
                r.problem(key, "missing")
            ids[key] = value or ""
        versions = r.obj(data, "versions")
        thresholds = r.obj(data, "thresholds")
        limits = r.obj(data, "limits")
        history = r.array(data, "history", MAX_HISTORY)
        files = r.array(data, "files", MAX_FILES)
        partial = data.get("partial", False)
        if not isinstance(partial, bool):
            r.wrong("partial", partial, "a boolean")
            partial = False
        event = cls(
            id=ids["id"],
            service=ids["service"],
            rule=ids["rule"],
            schema=schema,
            host=r.text(data, "host"),
            pid=r.integer(data, "pid"),
            versions=None if versions is None else Versions._read(r, versions, "versions."),
            reason=r.text(data, "reason"),
            value=r.number(data, "value"),
            unit=r.text(data, "unit"),
            thresholds=None
            if thresholds is None
            else Thresholds._read(r, thresholds, "thresholds."),
            time=r.text(data, "time"),
            history=None if history is None else r.each(history, "history", Point._read),
            sample=_sample(r, r.obj(data, "sample")),
            limits=None if limits is None else ProcessLimits._read(r, limits, "limits."),
            captures=_captures(r, r.obj(data, "captures")),
            partial=partial,
            partial_reason=r.text(data, "partial_reason"),
            salvaged=r.obj(data, "salvaged"),
            files=None if files is None else r.each(files, "files", FileEntry._read),
            extra={k: v for k, v in data.items() if k not in _KNOWN},
        )
        return event, r.problems

    # -- writing --

    def to_json(self) -> dict[str, Any]:
        """The `event.json` object: `schema` first, absent fields left out, unknown keys last."""
        out: dict[str, Any] = {"schema": self.schema, "id": self.id, "service": self.service}
        optional: list[tuple[str, Any]] = [
            ("host", self.host),
            ("pid", self.pid),
            ("versions", self.versions and self.versions.to_json()),
            ("rule", self.rule),
            ("reason", self.reason),
            ("value", self.value),
            ("unit", self.unit),
            ("thresholds", self.thresholds and self.thresholds.to_json()),
            ("time", self.time),
            ("history", _map(self.history, Point.to_json)),
            ("sample", None if self.sample is None else dict(self.sample)),
            ("limits", self.limits and self.limits.to_json()),
            (
                "captures",
                None
                if self.captures is None
                else {k: v.to_json() for k, v in self.captures.items()},
            ),
            ("partial", self.partial or None),
            ("partial_reason", self.partial_reason),
            ("salvaged", self.salvaged),
            ("files", _map(self.files, FileEntry.to_json)),
        ]
        out.update((k, v) for k, v in optional if v is not None or k == "rule")
        out.update((k, v) for k, v in self.extra.items() if k not in out)
        return out

    # -- what readers ask --

    def capture(self, name: str) -> CaptureFacts | None:
        return (self.captures or {}).get(name)

    @property
    def file_names(self) -> list[str]:
        return [f.name for f in self.files or ()]


def _map(items: tuple[T, ...] | None, func: Callable[[T], dict[str, Any]]) -> list[Any] | None:
    return None if items is None else [func(item) for item in items]


def _sample(r: _Reader, data: dict[str, Any] | None) -> dict[str, float | None] | None:
    if data is None:
        return None
    out: dict[str, float | None] = {}
    if len(data) > MAX_CAPTURES:
        r.problem("sample", f"{len(data):,} entries, more than {MAX_CAPTURES}")
    for key in list(data)[:MAX_CAPTURES]:
        out[key] = r.number(data, key, "sample.")
    return out


def _captures(r: _Reader, data: dict[str, Any] | None) -> dict[str, CaptureFacts] | None:
    if data is None:
        return None
    if len(data) > MAX_CAPTURES:
        r.problem("captures", f"{len(data):,} entries, more than {MAX_CAPTURES}")
    out: dict[str, CaptureFacts] = {}
    for name, facts in list(data.items())[:MAX_CAPTURES]:
        if isinstance(facts, dict):
            out[name] = CaptureFacts._read(r, facts, f"captures.{name}.")
        else:
            r.wrong(f"captures.{name}", facts, "an object")
    return out
