"""Reading the JSON twin of a text dump (`tasks.json`, `heap-types.json`, ...): bounded and typed.

Each capture writes its result twice: the text for people, and the same
objects as JSON for `show`, `serve` and `diff`, so no reader parses prose
back. A bundle can come from any machine that writes to the bucket, so the
JSON is read as `event.json` is: through `holmespy.event.load_json` (at most
4 MiB, 32 levels deep; NaN, Infinity and numbers beyond a float become None),
then value by value, each of the type its field wants.

`Reader(strict=True)` raises `BadDump` (one line naming the file and the
field) at the first wrong value; `strict=False` leaves out what is wrong,
an item at a time (a group, a holder, a row), and says each in `problems`,
which the views print as `!!` lines. A value that is not a JSON object at
the top is a `BadDump` either way.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Self, TypeVar

from holmespy.event import BadEvent, kind_of, load_json
from holmespy.printable import printable

T = TypeVar("T")

MAX_INT = 2**63
"""Counts and sizes beyond this are not real ones (a heap of 2**63 bytes)."""
MAX_NAME = 4096
"""Characters of one name kept (a type, a task, a frame); the writers keep 200 or fewer."""


class BadDump(ValueError):
    """A dump's JSON that is not one holmespy wrote: the message is one line saying why."""


class Wrong(Exception):
    """One value of the wrong type or out of range; the message names where."""


def load(raw: bytes, file: str) -> dict[str, Any]:
    """`raw` as a JSON object within the `event.json` limits, or `BadDump`."""
    try:
        data = load_json(raw)
    except BadEvent as exc:
        raise BadDump(f"{file}: {exc}") from None
    if not isinstance(data, dict):
        raise BadDump(f"{file}: {kind_of(data)}, not a JSON object")
    return data


def wrong(where: str, value: object, wanted: str) -> Wrong:
    shown = printable(repr(value), 40)
    return Wrong(f"{where}: {kind_of(value)} ({shown}), not {wanted}")


# -- one value --------------------------------------------------------------------------------


def text(data: Mapping[str, Any], key: str, where: str = "") -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise wrong(where + key, value, "a string")
    return value[:MAX_NAME]


def optional_text(data: Mapping[str, Any], key: str, where: str = "") -> str | None:
    return None if data.get(key) is None else text(data, key, where)


def integer(
    data: Mapping[str, Any], key: str, where: str = "", *, signed: bool = False, default: int = 0
) -> int:
    """A count (non-negative unless `signed`) below 2**63; `default` when the key is absent."""
    if key not in data:
        return default
    return as_int(data[key], where + key, signed=signed)


def as_int(value: object, where: str, *, signed: bool = False) -> int:
    low = -MAX_INT if signed else 0
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value < MAX_INT:
        raise wrong(where, value, "an integer" if signed else "a non-negative integer")
    return value


def optional_int(data: Mapping[str, Any], key: str, where: str = "") -> int | None:
    return None if data.get(key) is None else integer(data, key, where)


def number(data: Mapping[str, Any], key: str, where: str = "", default: float = 0.0) -> float:
    """A finite number; `default` when the key is absent."""
    if key not in data:
        return default
    value = data[key]
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise wrong(where + key, value, "a number")
    try:
        finite = float(value)
    except OverflowError:
        finite = math.inf
    if not math.isfinite(finite):
        raise wrong(where + key, value, "a finite number")
    return finite


def optional_number(data: Mapping[str, Any], key: str, where: str = "") -> float | None:
    return None if data.get(key) is None else number(data, key, where)


def flag(data: Mapping[str, Any], key: str, where: str = "") -> bool:
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise wrong(where + key, value, "a boolean")
    return value


def obj(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise wrong(where, value, "an object")
    return value


def array(value: object, where: str, limit: int) -> list[Any]:
    if not isinstance(value, list):
        raise wrong(where, value, "a list")
    if len(value) > limit:
        raise Wrong(f"{where}: {len(value):,} entries, more than {limit:,}")
    return value


def ints(value: object, where: str, limit: int) -> tuple[int, ...]:
    return tuple(as_int(v, f"{where}[{n}]") for n, v in enumerate(array(value, where, limit)))


def counts(value: object, where: str, limit: int, *, signed: bool = False) -> dict[str, int]:
    """A JSON object of name -> integer (a census column)."""
    found = obj(value, where)
    if len(found) > limit:
        raise Wrong(f"{where}: {len(found):,} entries, more than {limit:,}")
    return {
        name[:MAX_NAME]: as_int(n, f"{where}.{printable(name, 60)}", signed=signed)
        for name, n in found.items()
    }


# -- strict or lenient ------------------------------------------------------------------------


class Reader:
    """Reads one dump's JSON: strict raises `BadDump` at the first problem, lenient notes it
    in `problems` and goes on without the value (or the item) it was in."""

    def __init__(self, file: str, *, strict: bool) -> None:
        self.file = file
        self.strict = strict
        self.problems: list[str] = []

    def problem(self, message: str) -> None:
        line = f"{self.file}: {printable(message, 200)}"
        if self.strict:
            raise BadDump(line)
        self.problems.append(line)

    def field(self, read: Callable[[], T], default: T) -> T:
        """`read()`, or `default` (and a problem) when it meets a wrong value."""
        try:
            return read()
        except Wrong as exc:
            self.problem(str(exc))
            return default

    def items(
        self, data: Mapping[str, Any], key: str, limit: int, read: Callable[[Any, str], T]
    ) -> tuple[T, ...]:
        """Each entry of the list `data[key]` read by `read(entry, where)`; a wrong entry is
        left out (lenient), a list longer than `limit` is cut to it (lenient)."""
        value = data.get(key)
        if value is None:
            return ()
        if not isinstance(value, list):
            self.problem(str(wrong(key, value, "a list")))
            return ()
        if len(value) > limit:
            self.problem(f"{key}: {len(value):,} entries, more than {limit:,}")
            value = value[:limit]
        out = []
        for n, item in enumerate(value):
            try:
                out.append(read(item, f"{key}[{n}]"))
            except Wrong as exc:
                self.problem(f"{exc}; entry left out")
        return tuple(out)

    def schema(self, data: Mapping[str, Any], known: int) -> int:
        """The layout number (1 when absent); a newer one is read as far as its fields are known."""
        return self.field(lambda: max(1, integer(data, "schema", default=1)), known)


class Twin:
    """A text dump's objects, read from its JSON twin: strictly, leniently, or from bytes.

    A subclass names its file (`FILE`) and reads one parsed object in `_read`.
    """

    FILE: ClassVar[str]

    @classmethod
    def from_json(cls, data: object) -> Self:
        """The objects `data` (parsed JSON) holds, or `BadDump` at the first wrong value."""
        return cls._read(data, Reader(cls.FILE, strict=True))

    @classmethod
    def read(cls, data: object) -> tuple[Self, list[str]]:
        """The objects as far as `data` makes sense, and one line per value left out."""
        reader = Reader(cls.FILE, strict=False)
        return cls._read(data, reader), reader.problems

    @classmethod
    def loads(cls, raw: bytes) -> tuple[Self, list[str]]:
        """The file's bytes read leniently; `BadDump` when they hold no JSON object."""
        return cls.read(load(raw, cls.FILE))

    @classmethod
    def _read(cls, data: object, r: Reader) -> Self:
        raise NotImplementedError
