"""`threads.json`: the thread dump as data, so no reader parses `threads.txt` back.

The thread capture builds a `ThreadDump` in the same pass that writes
`threads.txt`, and writes both: the text for people and for tools that read
py-spy dumps, this for `show` and `serve`, which group threads stopped in an
identical stack. Bundles written before it have only the text; readers then
show the text as it is: nothing parses it back.

Reading is strict, as for `event.json`: a bounded JSON document
(`holmespy.event.load_json`), every value of its type, counts within limits;
anything else is a `BadDump` in one line. Names and file names are stored as
`threads.txt` writes them, escaped by `holmespy.printable`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from holmespy.dumpjson import BadDump
from holmespy.event import BadEvent, load_json
from holmespy.printable import printable

__all__ = ["FILE", "BadDump", "Frame", "Group", "ThreadDump", "ThreadStack"]

FILE = "threads.json"
SCHEMA = 1
MAX_THREADS = 100_000
MAX_FRAMES = 1_000
"""Frames per thread read at most (the writer keeps 200)."""


@dataclass(frozen=True)
class Frame:
    function: str
    file: str
    line: int

    @property
    def label(self) -> str:
        """`function (file:line)`, as `threads.txt` prints a frame."""
        return f"{self.function} ({self.file}:{self.line})"


@dataclass(frozen=True)
class ThreadStack:
    name: str
    ident: int
    frames: tuple[Frame, ...]
    """Innermost call first."""
    omitted: int = 0
    """Older frames beyond the writer's limit."""
    error: str | None = None
    """Why the stack could not be read in full."""


@dataclass(frozen=True)
class Group:
    """Threads stopped in one identical stack."""

    count: int
    names: list[str]
    frames: list[str]
    """Labels, innermost first."""


@dataclass(frozen=True)
class ThreadDump:
    threads: tuple[ThreadStack, ...]
    excluded: tuple[str, ...] = ()
    """holmespy's own threads, named but not dumped."""

    def groups(self) -> list[Group]:
        """Threads grouped by identical stack, the biggest group first."""
        by_stack: dict[tuple[str, ...], list[str]] = defaultdict(list)
        for thread in self.threads:
            by_stack[tuple(f.label for f in thread.frames)].append(thread.name)
        found = [Group(len(names), names, list(stack)) for stack, names in by_stack.items()]
        found.sort(key=lambda g: -g.count)
        return found

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "threads": [
                {
                    "name": t.name,
                    "ident": t.ident,
                    "frames": [[f.function, f.file, f.line] for f in t.frames],
                    "omitted": t.omitted,
                    "error": t.error,
                }
                for t in self.threads
            ],
            "excluded": list(self.excluded),
        }

    @classmethod
    def loads(cls, raw: bytes) -> ThreadDump:
        try:
            data = load_json(raw)
        except BadEvent as exc:
            raise BadDump(f"{FILE}: {exc}") from None
        return cls.from_json(data)

    @classmethod
    def from_json(cls, data: object) -> ThreadDump:
        if not isinstance(data, dict):
            raise BadDump(f"{FILE}: not a JSON object")
        threads = _list(data.get("threads"), "threads", MAX_THREADS)
        excluded = _list(data.get("excluded", []), "excluded", MAX_THREADS)
        return cls(
            tuple(_thread(item, f"threads[{n}]") for n, item in enumerate(threads)),
            tuple(_text(name, f"excluded[{n}]") for n, name in enumerate(excluded)),
        )


def _bad(where: str, value: object, wanted: str) -> BadDump:
    shown = printable(repr(value), 60)
    return BadDump(f"{FILE}: {where}: {shown} is not {wanted}")


def _list(value: object, where: str, limit: int) -> list[Any]:
    if not isinstance(value, list):
        raise _bad(where, value, "a list")
    if len(value) > limit:
        raise BadDump(f"{FILE}: {where}: {len(value):,} entries, more than {limit:,}")
    return value


def _text(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise _bad(where, value, "a string")
    return value


def _int(value: object, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**64:
        raise _bad(where, value, "a non-negative integer")
    return value


def _thread(item: object, where: str) -> ThreadStack:
    if not isinstance(item, dict):
        raise _bad(where, item, "an object")
    frames = []
    for n, frame in enumerate(_list(item.get("frames"), f"{where}.frames", MAX_FRAMES)):
        at = f"{where}.frames[{n}]"
        if not isinstance(frame, list) or len(frame) != 3:
            raise _bad(at, frame, "[function, file, line]")
        frames.append(Frame(_text(frame[0], at), _text(frame[1], at), _int(frame[2], at)))
    error = item.get("error")
    return ThreadStack(
        _text(item.get("name"), f"{where}.name"),
        _int(item.get("ident"), f"{where}.ident"),
        tuple(frames),
        _int(item.get("omitted", 0), f"{where}.omitted"),
        None if error is None else _text(error, f"{where}.error"),
    )
